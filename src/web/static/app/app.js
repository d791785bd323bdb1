// The chat page: sign in or up, your chats, a conversation whose answers
// stream in as they are written. Everything goes through the public HTTP API
// (api.js). Text a person or a model wrote reaches the DOM only as text, or as
// markdown turned into HTML and then sanitised (render.js).

import { showAdmin } from "./admin.js";
import * as api from "./api.js";
import { busy, field, h, say, wordsOf } from "./dom.js";
import { renderMarkdown } from "./render.js";

const app = document.getElementById("app");

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
    const sentNotice = h("p", { class: "notice", role: "status" });
    const second = h("form", { hidden: true }, sentNotice);
    first.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(sendButton, async () => {
        const sent = await api.sendCode(email.value, purpose);
        email.readOnly = true;
        sendButton.textContent = "Send a new code";
        const minutes = Math.round(sent.expires_in / 60);
        const words = [`A 6-digit code is on its way to ${email.value}; it works for ${minutes} minutes.`];
        if ((await environment()) === "development") {
          words.push("This server runs in development: without a mail server, it writes the code to its log.");
        }
        sentNotice.replaceChildren(...words.map((line) => h("span", {}, line, " ")));
        second.hidden = false;
        second.querySelector("input").focus();
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

// The server's environment, from its public health report (asked once).
let environmentAsked = null;
function environment() {
  environmentAsked ||= fetch("/health", { headers: { Accept: "application/json" } })
    .then((response) => response.json())
    .then((report) => report.environment)
    .catch(() => null);
  return environmentAsked;
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
  chat: null, // the open chat (without its messages)
  messages: [], // its active branch, oldest first
  earlier: false, // older messages of the branch are left to fetch
  running: null, // {chatId} while an answer streams
  attachments: [], // {id, name, preview} uploaded for the next question
  archived: false, // the list shows the archived chats instead
  ui: null,
};

async function mainView() {
  const [user, models] = await Promise.all([api.call("GET", "/auth/me"), api.call("GET", "/models")]);
  state.user = user;
  state.models = models.items;
  state.chats = [];
  state.nextCursor = null;
  state.chat = null;
  state.archived = false;

  const list = h("ul", { class: "chats", "aria-label": "Your chats" });
  // The next page comes when the list is scrolled to its end (or the button is pressed).
  const more = h("button", { type: "button", class: "more", onclick: () => loadChats() }, "More chats");
  const moreItem = h("li", { class: "more-item" }, more);
  new IntersectionObserver((seen) => seen.some((entry) => entry.isIntersecting) && loadChats(), {
    root: list,
  }).observe(moreItem);
  const query = h("input", { type: "search", name: "q", placeholder: "Search your chats", "aria-label": "Search your chats" });
  const search = h("form", { class: "search", role: "search" }, query);
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    searchChats(query.value.trim());
  });
  query.addEventListener("search", () => {
    if (!query.value) showChatList();
  });
  const usage = h("p", { class: "usage", "aria-live": "polite" });
  const archived = h("button", { type: "button", class: "archived-toggle", "aria-pressed": "false" }, "Archived chats");
  archived.addEventListener("click", () => {
    state.archived = !state.archived;
    archived.setAttribute("aria-pressed", String(state.archived));
    state.chats = [];
    state.nextCursor = null;
    state.ui.list.replaceChildren();
    loadChats();
  });
  const sidebar = h(
    "aside",
    { class: "sidebar" },
    h("button", { type: "button", class: "primary new-chat", onclick: () => openChat(null) }, "New chat"),
    search,
    list,
    h(
      "footer",
      {},
      archived,
      usage,
      h("p", { class: "who" }, user.username, user.is_admin ? " (admin)" : ""),
      user.is_admin ? h("button", { type: "button", onclick: openAdmin }, "Administration") : null,
      h("button", { type: "button", onclick: signOut }, "Sign out"),
    ),
  );
  const conversation = h("section", { class: "conversation", "aria-label": "Conversation" });
  show(h("div", { class: "layout" }, sidebar, h("main", { class: "pane" }, conversation)));
  state.ui = { list, moreItem, conversation, usage, query };
  await loadChats();
  await openChat(null);
  showUsage();
}

function openAdmin() {
  state.chat = null;
  if (!state.ui.query.value) showChatList();
  showAdmin(state.ui.conversation, state.user);
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

// --- the chat list and search ---------------------------------------------------

let loadingChats = false;
async function loadChats() {
  if (loadingChats || (state.chats.length && !state.nextCursor)) return;
  loadingChats = true;
  const query = new URLSearchParams({ limit: "30", archived: String(state.archived) });
  if (state.nextCursor) query.set("cursor", state.nextCursor);
  try {
    const page = await api.call("GET", `/chats?${query}`);
    const known = new Set(state.chats.map((chat) => chat.id));
    state.chats.push(...page.items.filter((chat) => !known.has(chat.id)));
    state.nextCursor = page.next_cursor;
    if (!state.ui.query.value) showChatList();
  } catch (error) {
    say(wordsOf(error));
  } finally {
    loadingChats = false;
  }
}

function showChatList() {
  const { list, moreItem } = state.ui;
  list.setAttribute("aria-label", state.archived ? "Your archived chats" : "Your chats");
  const empty = state.archived && !state.chats.length ? [h("li", { class: "empty" }, "No archived chat.")] : [];
  list.replaceChildren(...state.chats.map(chatItem), ...empty, ...(state.nextCursor ? [moreItem] : []));
}

function chatItem(chat) {
  return h(
    "li",
    { "data-chat": String(chat.id) },
    h(
      "button",
      { type: "button", class: "chat-link", "aria-current": String(state.chat?.id === chat.id), onclick: () => openChat(chat.id) },
      chat.pinned ? "\u{1F4CC} " : "",
      chat.title || "Untitled chat",
    ),
  );
}

// A snippet's matches (wrapped in ** by the server) as <mark>, the rest as text.
function highlighted(snippet) {
  return snippet.split("**").map((part, index) => (index % 2 ? h("mark", {}, part) : part));
}

async function searchChats(words) {
  const { list } = state.ui;
  if (!words) {
    showChatList();
    return;
  }
  try {
    const found = await api.call("GET", `/search?${new URLSearchParams({ q: words, limit: "20" })}`);
    list.setAttribute("aria-label", `Messages matching ${words}`);
    list.replaceChildren(
      ...(found.items.length
        ? found.items.map((hit) =>
            h(
              "li",
              { class: "hit" },
              h(
                "button",
                { type: "button", class: "chat-link", onclick: () => openChat(hit.chat_id) },
                h("strong", {}, hit.chat_title || "Untitled chat"),
                h("span", { class: "snippet" }, ...highlighted(hit.snippet)),
              ),
            ),
          )
        : [h("li", { class: "empty" }, "No message matches.")]),
    );
  } catch (error) {
    say(wordsOf(error));
  }
}

function remember(chat) {
  const { messages, ...only } = chat;
  state.chat = only;
  const others = state.chats.filter((c) => c.id !== only.id);
  // The list shows either the chats or the archived ones.
  state.chats = (only.archived === state.archived ? [only, ...others] : others).sort(
    (a, b) => Number(b.pinned) - Number(a.pinned) || b.updated_at.localeCompare(a.updated_at),
  );
  if (!state.ui.query.value) showChatList();
  return messages;
}

// --- a conversation -------------------------------------------------------------

const NEWEST_SHOWN = 100; // GET /chats/{id} gives the branch's newest 100 messages

// A chat's active branch (null: a new, empty chat).
async function openChat(chatId) {
  let messages = [];
  if (chatId === null) {
    state.chat = null;
    if (!state.ui.query.value) showChatList();
  } else {
    try {
      messages = remember(await api.call("GET", `/chats/${chatId}`));
    } catch (error) {
      say(wordsOf(error));
      return;
    }
  }
  state.messages = messages;
  state.earlier = messages.length >= NEWEST_SHOWN;
  state.attachments = [];
  drawConversation();
  const last = messages[messages.length - 1];
  if (last?.status === "streaming") follow(last); // a reload during an answer: go on with it
}

// ``typed``: what the message box holds (kept when the same chat is drawn again).
function drawConversation(typed = "") {
  const { conversation } = state.ui;
  const chat = state.chat;
  const thread = h("ol", { class: "messages", "aria-live": "polite" });
  if (state.earlier) {
    const button = h("button", { type: "button", class: "more" }, "Earlier messages");
    const item = h("li", { class: "earlier" }, button);
    button.addEventListener("click", () => busy(button, () => loadEarlier(item)));
    thread.append(item);
  }
  for (const message of state.messages) thread.append(messageView(message));

  const model = h(
    "select",
    { name: "model", "aria-label": "Model" },
    ...state.models.map((offer) =>
      h("option", { value: offer.id, selected: chat ? offer.id === chat.model : offer.default }, offer.id),
    ),
  );
  const input = h("textarea", { name: "message", rows: "3", placeholder: "Ask anything", "aria-label": "Message" }, typed);
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", class: "stop", hidden: true }, "Stop");
  const picker = h("input", { type: "file", accept: "image/jpeg,image/png,image/gif,image/webp", multiple: true, class: "visually-hidden", id: "attach" });
  const attach = h("label", { for: "attach", class: "button", tabindex: "0", role: "button" }, "Attach image");
  const tray = h("ul", { class: "tray", "aria-label": "Images to send" }, ...state.attachments.map(trayItem));
  const form = h("form", { class: "composer" }, tray, input, h("div", { class: "actions" }, picker, attach, model, stop, send));

  attach.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      picker.click();
    }
  });
  picker.addEventListener("change", () => {
    for (const file of picker.files) addAttachment(file, tray);
    picker.value = "";
  });
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
    if (state.attachments.some((file) => file.id === null)) {
      say("An image is still uploading.", "info");
      return;
    }
    const sending = state.attachments;
    input.value = "";
    state.attachments = [];
    tray.replaceChildren();
    ask(text, model.value, sending.map((file) => file.id)).then(
      () => sending.forEach((file) => URL.revokeObjectURL(file.preview)),
      (error) => {
        // Refused (a quota, an answer still running): nothing is lost.
        say(wordsOf(error));
        const { input: box } = state.ui.composer;
        if (!box.value) box.value = text;
        state.attachments = [...sending, ...state.attachments];
        box.closest("form").querySelector(".tray").replaceChildren(...state.attachments.map(trayItem));
      },
    );
  });
  stop.addEventListener("click", () => stopAnswer(stop));

  const header = h("header", {}, h("h2", {}, chat ? chat.title || "Untitled chat" : "New chat"));
  if (chat) header.append(chatActions(chat));
  conversation.replaceChildren(header, thread, form);
  state.ui.thread = thread;
  state.ui.composer = { send, stop, input, model };
  thread.lastElementChild?.scrollIntoView({ block: "end" });
  input.focus();
}

// The branch's previous page, above what is shown (the view keeps its place).
async function loadEarlier(item) {
  const first = state.messages[0];
  const query = new URLSearchParams({ limit: "50", before: String(first.id) });
  const page = await api.call("GET", `/chats/${state.chat.id}/messages?${query}`);
  state.messages = [...page.items, ...state.messages];
  state.earlier = page.next_cursor !== null;
  const { thread } = state.ui;
  const height = thread.scrollHeight;
  item.after(...page.items.map(messageView));
  if (!state.earlier) item.remove();
  thread.scrollTop += thread.scrollHeight - height;
}

function chatActions(chat) {
  const rename = h("button", { type: "button" }, "Rename");
  rename.addEventListener("click", () => {
    const title = h("input", { name: "title", value: chat.title || "", "aria-label": "Title", maxlength: "200" });
    const form = h("form", { class: "rename" }, title, h("button", { type: "submit", class: "primary" }, "Save"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      changeChat({ title: title.value.trim() || null });
    });
    state.ui.conversation.querySelector("header h2").replaceChildren(form);
    title.focus();
  });
  const pin = h("button", { type: "button", onclick: () => changeChat({ pinned: !chat.pinned }) }, chat.pinned ? "Unpin" : "Pin");
  const archive = h("button", { type: "button", onclick: () => changeChat({ archived: !chat.archived }) }, chat.archived ? "Unarchive" : "Archive");
  const remove = h("button", { type: "button", class: "danger", onclick: () => deleteChat(chat) }, "Delete");
  return h("div", { class: "chat-actions" }, rename, pin, archive, remove);
}

async function changeChat(changes) {
  try {
    const before = state.chat.archived;
    const chat = await api.call("PATCH", `/chats/${state.chat.id}`, changes);
    remember(chat); // an archived chat moves to the archived list, and back
    drawConversation();
    const moved = chat.archived === before ? "Saved." : chat.archived ? "Archived: it is under Archived chats now." : "Back among your chats.";
    say(moved, "info");
  } catch (error) {
    say(wordsOf(error));
  }
}

async function deleteChat(chat) {
  if (!window.confirm(`Delete "${chat.title || "Untitled chat"}" and all its messages?`)) return;
  try {
    await api.call("DELETE", `/chats/${chat.id}`);
    state.chats = state.chats.filter((c) => c.id !== chat.id);
    await openChat(null);
    say("Deleted.", "info");
  } catch (error) {
    say(wordsOf(error));
  }
}

function addAttachment(file, tray) {
  // Shown at once, from the file itself, while it uploads.
  const entry = { id: null, name: file.name, preview: URL.createObjectURL(file) };
  state.attachments.push(entry);
  tray.append(trayItem(entry));
  const form = new FormData();
  form.append("file", file);
  api
    .call("POST", "/upload", form)
    .then((uploaded) => {
      entry.id = uploaded.id;
      document.querySelector(`.tray [data-preview="${entry.preview}"]`)?.classList.remove("uploading");
    })
    .catch((error) => {
      dropAttachment(entry);
      say(`${file.name}: ${wordsOf(error)}`);
    });
}

function trayItem(entry) {
  const remove = h("button", { type: "button", class: "remove", "aria-label": `Remove ${entry.name}`, onclick: () => dropAttachment(entry) }, "\u00d7");
  return h(
    "li",
    { class: entry.id === null ? "uploading" : "", "data-preview": entry.preview },
    h("img", { src: entry.preview, alt: entry.name }),
    remove,
  );
}

function dropAttachment(entry) {
  state.attachments = state.attachments.filter((other) => other !== entry);
  document.querySelector(`.tray [data-preview="${entry.preview}"]`)?.remove();
  URL.revokeObjectURL(entry.preview);
}

function messageView(message) {
  const body = h("div", { class: "body" });
  const item = h("li", { class: `message ${message.role}`, "data-message": String(message.id) }, body);
  fill(item, message);
  return item;
}

// Shows a message as stored (or as streamed so far), with what can be done to it.
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
  item.querySelector(".tools")?.remove();
  if (message.status === "failed" || message.status === "stopped") {
    item.append(h("p", { class: "status" }, message.status === "failed" ? "This answer failed." : "Stopped."));
  }
  if (message.status !== "streaming" && message.id > 0) item.append(tools(message));
}

function tools(message) {
  const bar = h("div", { class: "tools" });
  const siblings = message.siblings || [message.id];
  if (siblings.length > 1) {
    const at = siblings.indexOf(message.id);
    bar.append(
      h("button", { type: "button", "aria-label": "Previous version", disabled: at === 0, onclick: () => switchTo(siblings[at - 1]) }, "<"),
      h("span", { class: "version" }, `${at + 1}/${siblings.length}`),
      h("button", { type: "button", "aria-label": "Next version", disabled: at === siblings.length - 1, onclick: () => switchTo(siblings[at + 1]) }, ">"),
    );
  }
  if (message.role === "user") {
    bar.append(h("button", { type: "button", onclick: (event) => edit(message, event.target.closest("li")) }, "Edit"));
  } else {
    bar.append(h("button", { type: "button", onclick: () => regenerate(message) }, "Regenerate"));
  }
  return bar;
}

async function switchTo(messageId) {
  if (state.running) return;
  try {
    state.messages = remember(await api.call("PUT", `/chats/${state.chat.id}/current`, { message_id: messageId }));
    state.earlier = state.messages.length >= NEWEST_SHOWN;
    drawConversation(state.ui.composer.input.value);
  } catch (error) {
    say(wordsOf(error));
  }
}

// Everything from ``message`` on leaves the view (a new branch replaces it).
function cutAt(message) {
  const at = state.messages.findIndex((m) => m.id === message.id);
  if (at !== -1) state.messages = state.messages.slice(0, at);
  const shown = [...state.ui.thread.querySelectorAll(":scope > li.message")];
  for (const item of shown.slice(at === -1 ? shown.length : at)) item.remove();
}

function edit(message, item) {
  if (state.running) return;
  const text = h("textarea", { name: "edit", rows: "3", "aria-label": "Edited message" }, message.content);
  const save = h("button", { type: "submit", class: "primary" }, "Send");
  const cancel = h("button", { type: "button", onclick: () => fill(item, message) }, "Cancel");
  const form = h("form", { class: "editor" }, text, h("div", { class: "actions" }, cancel, save));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = text.value.trim();
    if (!content) return;
    cutAt(message);
    // The edited question follows the same parent: a new branch beside the old one.
    answer("POST", `/chats/${state.chat.id}/messages`, { content, parent_id: message.parent_id, file_ids: message.file_ids }).catch(
      refused,
    );
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
    if (event.key === "Escape") fill(item, message);
  });
  item.querySelector(".body").replaceChildren(form);
  item.querySelector(".tools")?.remove();
  text.focus();
}

function regenerate(message) {
  if (state.running) return;
  cutAt(message);
  const body = {};
  const model = state.ui.composer.model.value;
  if (model !== state.chat.model) body.model = model;
  answer("POST", `/chats/${state.chat.id}/messages/${message.id}/regenerate`, body).catch(refused);
}

// An edit or a regenerate the server refused: say why, and show the branch as it is.
function refused(error) {
  say(wordsOf(error));
  if (state.chat) openChat(state.chat.id);
}

async function ask(text, model, fileIds) {
  if (!state.chat) {
    remember(await api.call("POST", "/chats", { model }));
    drawConversation(state.ui.composer.input.value);
  }
  const body = { content: text };
  if (fileIds.length) body.file_ids = fileIds;
  if (model && model !== state.chat.model) body.model = model;
  await answer("POST", `/chats/${state.chat.id}/messages`, body);
}

// An answer being written elsewhere (a reload, another tab): its text so far,
// then each new piece.
function follow(message) {
  const offset = [...message.content].length; // the server counts characters
  answer("GET", `/chats/${state.chat.id}/messages/${message.id}/stream?offset=${offset}`, undefined, message).catch(
    (error) => say(wordsOf(error)),
  );
}

// Streams an answer into the thread: a send (question and answer), a
// regenerate (the answer), or a resume (``following``: the answer shown).
async function answer(method, path, body, following = null) {
  const chatId = state.chat.id;
  const { thread } = state.ui;
  const { send, stop, input } = state.ui.composer;
  state.running = { chatId };
  send.disabled = true;
  stop.hidden = false;
  input.setAttribute("aria-busy", "true");
  let current = following;
  let item = following ? thread.querySelector(`[data-message="${following.id}"]`) : null;
  let written = following ? following.content : "";
  let frame = 0;
  const draw = () => {
    frame = 0;
    if (item) fill(item, current, written);
  };
  try {
    await api.stream(method, path, body, (name, data) => {
      if (name === "user_message") {
        state.messages.push(data);
        thread.append(messageView(data));
      } else if (name === "assistant_message") {
        current = data;
        item = messageView(data);
        item.querySelector(".body").replaceChildren(h("p", { class: "thinking" }, "Thinking\u2026"));
        thread.append(item);
      } else if (name === "delta") {
        written += data.text;
        frame ||= requestAnimationFrame(draw);
      } else if (name === "done" || name === "stopped" || name === "message") {
        cancelAnimationFrame(frame);
        current = data;
        fill(item, data);
      } else if (name === "error") {
        cancelAnimationFrame(frame);
        if (item) fill(item, { ...current, status: "failed" }, written);
        say(data.detail || "The model failed.");
      }
      item?.scrollIntoView({ block: "end" });
    });
  } finally {
    state.running = null;
    send.disabled = false;
    stop.hidden = true;
    input.removeAttribute("aria-busy");
  }
  // The branch as stored: versions to switch between, and a first exchange's title.
  if (state.chat?.id === chatId) {
    try {
      state.messages = remember(await api.call("GET", `/chats/${chatId}`));
      state.earlier = state.messages.length >= NEWEST_SHOWN;
      drawConversation(state.ui.composer.input.value);
      if (!state.chat.title) watchTitle(chatId);
    } catch {
      // shown as streamed until the next reload
    }
  }
  showUsage();
}

// A new chat's title is written in the background after its first answer
// (by the model, when there is one): look again a few times, then let it be.
function watchTitle(chatId, delay = 1000, tries = 4) {
  setTimeout(async () => {
    const listed = state.chats.find((c) => c.id === chatId);
    if (!listed || listed.title) return;
    try {
      const { messages, ...chat } = await api.call("GET", `/chats/${chatId}`);
      if (!chat.title) {
        if (tries > 1) watchTitle(chatId, delay * 2, tries - 1);
        return;
      }
      Object.assign(listed, { title: chat.title });
      if (state.chat?.id === chatId) {
        state.chat.title = chat.title;
        const heading = state.ui.conversation.querySelector("header h2");
        if (heading && !heading.querySelector("form")) heading.textContent = chat.title;
      }
      if (!state.ui.query.value) showChatList();
    } catch {
      // the next reload shows it
    }
  }, delay);
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
