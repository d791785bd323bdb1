// The chat page: sign in or up, your chats, a conversation whose answers
// stream in as they are written. Everything goes through the public HTTP API
// (api.js). Text a person or a model wrote reaches the DOM only as text, or as
// markdown turned into HTML and then sanitised (render.js).

import * as api from "./api.js";
import { renderMarkdown } from "./render.js";

const app = document.getElementById("app");
const toast = document.getElementById("toast");

// --- small DOM helpers -------------------------------------------------------

// An element; strings among the children become text nodes, never HTML.
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let toastTimer = null;
function say(words, kind = "error") {
  toast.textContent = words;
  toast.className = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (toast.hidden = true), 6000);
}

function wordsOf(error) {
  return error instanceof api.ApiError ? error.words : "The server could not be reached.";
}

// Runs an action from a form: its button waits, and a failure is said in words.
async function busy(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    say(wordsOf(error));
  } finally {
    button.disabled = false;
  }
}

function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

// --- signing in --------------------------------------------------------------

function authView(mode = "login", notice = "") {
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const tabs = h(
    "div",
    { class: "tabs", role: "tablist", "aria-label": "Account" },
    ...[
      ["login", "Sign in"],
      ["register", "Create account"],
      ["reset", "Forgot password"],
    ].map(([name, label]) =>
      h(
        "button",
        { type: "button", role: "tab", "aria-selected": String(name === mode), onclick: () => show(authView(name)) },
        label,
      ),
    ),
  );
  const card = h("section", { class: "auth card" }, h("h1", {}, "Gemini Chat"), tabs);
  if (notice) card.append(h("p", { class: "notice", role: "status" }, notice));

  if (mode === "login") {
    const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
    const form = h("form", {}, field("Email", email), field("Password", password), submit);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, async () => {
        await api.login(email.value, password.value);
        await mainView();
      });
    });
    card.append(form);
  } else {
    const purpose = mode === "register" ? "email_verification" : "password_reset";
    const sendButton = h("button", { type: "submit", class: "primary" }, "Send me a code");
    const first = h("form", {}, field("Email", email), sendButton);
    const second = h("form", { hidden: true });
    first.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(sendButton, async () => {
        await api.sendCode(email.value, purpose);
        email.readOnly = true;
        sendButton.textContent = "Send a new code";
        second.hidden = false;
        second.querySelector("input").focus();
        say(
          "A 6-digit code is on its way to your email. (A server without a mail server " +
            "writes it to its log instead.)",
          "info",
        );
      });
    });
    const code = h("input", { name: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: "6", required: true });
    const password = h("input", { type: "password", name: "new-password", autocomplete: "new-password", minlength: "8", required: true });
    const done = h("button", { type: "submit", class: "primary" }, mode === "register" ? "Create account" : "Set the new password");
    second.append(field("Code", code));
    if (mode === "register") {
      const username = h("input", { name: "username", autocomplete: "username", pattern: "[A-Za-z0-9_.\\-]{3,32}", required: true });
      const fullName = h("input", { name: "name", autocomplete: "name" });
      second.append(field("Username", username), field("Full name (optional)", fullName), field("Password (8 characters or more)", password), done);
      second.addEventListener("submit", (event) => {
        event.preventDefault();
        busy(done, async () => {
          await api.register(email.value, code.value.trim(), username.value, password.value, fullName.value.trim());
          await mainView();
        });
      });
    } else {
      second.append(field("New password (8 characters or more)", password), done);
      second.addEventListener("submit", (event) => {
        event.preventDefault();
        busy(done, async () => {
          await api.resetPassword(email.value, code.value.trim(), password.value);
          show(authView("login", "Your password is changed: sign in with it."));
        });
      });
    }
    card.append(first, second);
  }
  return h("main", { class: "center" }, card);
}

function show(view) {
  app.replaceChildren(view);
  const first = view.querySelector("[autofocus], input:not([readonly]), textarea");
  if (first) first.focus();
}

// --- the signed-in page ------------------------------------------------------

const state = {
  user: null,
  models: [],
  chats: [],
  nextCursor: null,
  chat: null, // the open chat
  running: null, // {chatId, controller} while an answer streams
};

async function mainView() {
  const [user, models] = await Promise.all([api.call("GET", "/auth/me"), api.call("GET", "/models")]);
  state.user = user;
  state.models = models.items;
  state.chats = [];
  state.nextCursor = null;
  state.chat = null;

  const list = h("ul", { class: "chats", "aria-label": "Your chats" });
  const more = h("button", { type: "button", class: "more", hidden: true, onclick: () => loadChats(list, more) }, "More chats");
  const usage = h("p", { class: "usage", "aria-live": "polite" });
  const sidebar = h(
    "aside",
    { class: "sidebar" },
    h("button", { type: "button", class: "primary new-chat", onclick: () => openChat(null) }, "New chat"),
    list,
    more,
    h(
      "footer",
      {},
      usage,
      h("p", { class: "who" }, user.username, user.is_admin ? " (admin)" : ""),
      h("button", { type: "button", onclick: signOut }, "Sign out"),
    ),
  );
  const conversation = h("section", { class: "conversation", "aria-label": "Conversation" });
  show(h("div", { class: "layout" }, sidebar, h("main", { class: "pane" }, conversation)));
  state.ui = { list, more, conversation, usage };
  await loadChats(list, more);
  openChat(null);
  showUsage();
}

async function signOut() {
  try {
    await api.logout();
  } catch {
    // signed out here either way
  }
  show(authView("login", "You are signed out."));
}

async function showUsage() {
  try {
    const { quota } = await api.call("GET", "/usage");
    const answers = quota.daily_messages === null
      ? `${quota.used_messages_today} ${quota.used_messages_today === 1 ? "answer" : "answers"} today`
      : `${quota.used_messages_today} of ${quota.daily_messages} answers today`;
    const tokens = quota.daily_tokens === null
      ? `${quota.used_tokens_today} tokens`
      : `${quota.used_tokens_today} of ${quota.daily_tokens} tokens`;
    state.ui.usage.textContent = `${answers}, ${tokens}`;
  } catch {
    state.ui.usage.textContent = "";
  }
}

async function loadChats(list, more) {
  const query = new URLSearchParams({ limit: "30" });
  if (state.nextCursor) query.set("cursor", state.nextCursor);
  try {
    const page = await api.call("GET", `/chats?${query}`);
    state.chats.push(...page.items);
    state.nextCursor = page.next_cursor;
    for (const chat of page.items) list.append(chatItem(chat));
    more.hidden = !page.next_cursor;
  } catch (error) {
    say(wordsOf(error));
  }
}

function chatItem(chat) {
  return h(
    "li",
    { "data-chat": String(chat.id) },
    h(
      "button",
      { type: "button", class: "chat-link", "aria-current": String(state.chat?.id === chat.id), onclick: () => openChat(chat.id) },
      chat.pinned ? "\u{1F4CC} " : "",
      chat.title || "New chat",
    ),
  );
}

function refreshChatList() {
  const { list } = state.ui;
  list.replaceChildren(...state.chats.map(chatItem));
}

// A chat's messages along its current branch (null: a new, empty chat).
async function openChat(chatId) {
  const { conversation } = state.ui;
  let chat = null;
  let messages = [];
  if (chatId !== null) {
    try {
      const found = await api.call("GET", `/chats/${chatId}`);
      messages = found.messages;
      chat = found;
    } catch (error) {
      say(wordsOf(error));
      return;
    }
  }
  state.chat = chat;
  refreshChatList();

  const thread = h("ol", { class: "messages", "aria-live": "polite" });
  for (const message of messages) thread.append(messageView(message));

  const model = h(
    "select",
    { name: "model", "aria-label": "Model" },
    ...state.models.map((offer) =>
      h("option", { value: offer.id, selected: chat ? offer.id === chat.model : offer.default }, offer.id),
    ),
  );
  const input = h("textarea", { name: "message", rows: "3", placeholder: "Ask anything", "aria-label": "Message", required: true });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", class: "stop", hidden: true }, "Stop");
  const form = h("form", { class: "composer" }, input, h("div", { class: "actions" }, model, stop, send));

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.running) return;
    input.value = "";
    ask(text, model.value, { thread, send, stop, input }).catch((error) => say(wordsOf(error)));
  });
  stop.addEventListener("click", () => stopAnswer(stop));

  conversation.replaceChildren(
    h("header", {}, h("h2", {}, chat ? chat.title || "New chat" : "New chat")),
    thread,
    form,
  );
  thread.lastElementChild?.scrollIntoView({ block: "end" });
  input.focus();
}

function messageView(message) {
  const body = h("div", { class: "body" });
  const item = h("li", { class: `message ${message.role}`, "data-message": String(message.id) }, body);
  fill(item, message);
  return item;
}

// Shows a message as stored (or as streamed so far).
function fill(item, message, text = message.content) {
  const body = item.querySelector(".body");
  if (message.role === "assistant") {
    body.replaceChildren(renderMarkdown(text));
  } else {
    body.replaceChildren(h("p", { class: "plain" }, text));
    if (message.file_urls?.length) {
      body.append(
        h("div", { class: "images" }, ...message.file_urls.map((url) => h("img", { src: url, alt: "An attached image", loading: "lazy" }))),
      );
    }
  }
  item.dataset.status = message.status;
  item.querySelector(".status")?.remove();
  if (message.status === "failed" || message.status === "stopped") {
    item.append(h("p", { class: "status" }, message.status === "failed" ? "This answer failed." : "Stopped."));
  }
}

async function ask(text, model, ui) {
  let chat = state.chat;
  if (!chat) {
    chat = await api.call("POST", "/chats", { model });
    state.chat = chat;
    state.chats.unshift(chat);
    refreshChatList();
  }
  const controller = new AbortController();
  state.running = { chatId: chat.id, controller };
  ui.send.disabled = true;
  ui.stop.hidden = false;
  ui.input.setAttribute("aria-busy", "true");
  let answerItem = null;
  let answer = null;
  let written = "";
  let frame = 0;
  const draw = () => {
    frame = 0;
    if (answerItem) fill(answerItem, answer, written);
  };
  const body = { content: text };
  if (model && model !== chat.model) body.model = model;
  try {
    await api.stream(
      "POST",
      `/chats/${chat.id}/messages`,
      body,
      (name, data) => {
        if (name === "user_message") {
          ui.thread.append(messageView(data));
        } else if (name === "assistant_message") {
          answer = data;
          answerItem = messageView(data);
          answerItem.querySelector(".body").replaceChildren(h("p", { class: "thinking" }, "Thinking\u2026"));
          ui.thread.append(answerItem);
        } else if (name === "delta") {
          written += data.text;
          frame ||= requestAnimationFrame(draw);
        } else if (name === "done" || name === "stopped") {
          cancelAnimationFrame(frame);
          answer = data;
          fill(answerItem, data);
        } else if (name === "error") {
          cancelAnimationFrame(frame);
          if (answerItem) fill(answerItem, { ...answer, status: "failed" }, written);
          say(data.detail || "The model failed.");
        }
        answerItem?.scrollIntoView({ block: "end" });
      },
      controller.signal,
    );
  } finally {
    state.running = null;
    ui.send.disabled = false;
    ui.stop.hidden = true;
    ui.input.removeAttribute("aria-busy");
  }
  // A chat's first exchange gives it a title: show it.
  try {
    const fresh = await api.call("GET", `/chats/${chat.id}`);
    const { messages, ...only } = fresh;
    state.chat = only;
    state.chats = [only, ...state.chats.filter((c) => c.id !== only.id)];
    refreshChatList();
    state.ui.conversation.querySelector("header h2").textContent = only.title || "New chat";
  } catch {
    // the list shows the old title until the next reload
  }
  showUsage();
}

async function stopAnswer(button) {
  const running = state.running;
  if (!running) return;
  await busy(button, () => api.call("POST", `/chats/${running.chatId}/stop`));
}

// --- start -------------------------------------------------------------------

api.onSignedOut(() => show(authView("login", "Your session ended: sign in again.")));

async function start() {
  if (await api.refresh().catch(() => false)) {
    try {
      await mainView();
      return;
    } catch (error) {
      say(wordsOf(error));
    }
  }
  show(authView("login"));
}

start();
