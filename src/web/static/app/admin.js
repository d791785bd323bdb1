// The admin screen, for admins only (the API refuses anyone else): the
// service's figures, and the users, searched a page at a time, each one
// editable, deactivated or deleted.

import * as api from "./api.js";
import { busy, field, h, say, wordsOf } from "./dom.js";

const PAGE_SIZE = 20;
const FIGURES = [
  ["total_users", "Users"],
  ["active_users_today", "Active today"],
  ["new_users_this_week", "New this week"],
  ["total_chats", "Chats"],
  ["total_messages", "Messages"],
];

// Draws the admin screen into ``pane``; ``me`` is the signed-in admin.
export async function showAdmin(pane, me) {
  const figures = h("dl", { class: "figures", "aria-label": "Statistics" });
  const query = h("input", { type: "search", name: "user-search", placeholder: "Email or username", "aria-label": "Search users" });
  const search = h("form", { class: "search", role: "search" }, query, h("button", { type: "submit" }, "Search"));
  const table = h("table", { class: "users" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of users" });
  pane.replaceChildren(
    h("header", {}, h("h2", {}, "Administration")),
    h("section", { class: "admin" }, figures, h("h3", {}, "Users"), search, table, pager),
  );
  const view = { page: 1, q: "", table, pager, me };
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    view.q = query.value.trim();
    view.page = 1;
    loadUsers(view);
  });
  query.addEventListener("search", () => {
    if (!query.value) search.requestSubmit();
  });
  try {
    const stats = await api.call("GET", "/admin/stats");
    figures.replaceChildren(
      ...FIGURES.map(([key, label]) =>
        h("div", { class: "figure" }, h("dt", {}, label), h("dd", {}, stats[key].toLocaleString())),
      ),
    );
  } catch (error) {
    say(wordsOf(error));
  }
  await loadUsers(view);
}

async function loadUsers(view) {
  const query = new URLSearchParams({ page: String(view.page), size: String(PAGE_SIZE) });
  if (view.q) query.set("q", view.q);
  let found;
  try {
    found = await api.call("GET", `/admin/users?${query}`);
  } catch (error) {
    say(wordsOf(error));
    return;
  }
  view.table.replaceChildren(
    h(
      "thead",
      {},
      h("tr", {}, ...["Email", "Username", "Name", "Status", "Daily limits", ""].map((name) => h("th", { scope: "col" }, name))),
    ),
    h("tbody", {}, ...found.items.map((user) => userRow(view, user))),
  );
  if (!found.items.length) view.table.append(h("caption", {}, "No user matches."));
  view.pager.replaceChildren(
    h("button", { type: "button", disabled: view.page <= 1, onclick: () => turn(view, -1) }, "Previous"),
    h("span", {}, `Page ${found.page} of ${Math.max(found.pages, 1)} (${found.total} ${found.total === 1 ? "user" : "users"})`),
    h("button", { type: "button", disabled: view.page >= found.pages, onclick: () => turn(view, 1) }, "Next"),
  );
}

function turn(view, step) {
  view.page += step;
  loadUsers(view);
}

function status(user) {
  const parts = [user.is_active ? "active" : "deactivated"];
  if (!user.is_verified) parts.push("unverified");
  if (user.is_admin) parts.push("admin");
  return parts.join(", ");
}

function limits(user) {
  const answers = user.daily_message_quota ?? "default";
  const tokens = user.daily_token_quota ?? "default";
  return `${answers} answers, ${tokens} tokens`;
}

function userRow(view, user) {
  const row = h(
    "tr",
    { "data-user": String(user.id) },
    h("td", {}, user.email),
    h("td", {}, user.username),
    h("td", {}, user.full_name || ""),
    h("td", {}, status(user)),
    h("td", {}, limits(user)),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", onclick: () => row.replaceWith(editRow(view, user)) }, "Edit"),
      user.id === view.me.id
        ? null
        : h("button", { type: "button", class: "danger", onclick: (event) => remove(view, user, event.target) }, "Delete"),
    ),
  );
  return row;
}

function editRow(view, user) {
  const username = h("input", { name: "username", value: user.username, required: true, pattern: "[A-Za-z0-9_.\\-]{3,32}" });
  const fullName = h("input", { name: "full_name", value: user.full_name || "" });
  const box = (name, checked, label, disabled = false) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name, checked, disabled }), label);
  const self = user.id === view.me.id; // an admin cannot deactivate or demote themself
  const active = box("is_active", user.is_active, "Active", self);
  const verified = box("is_verified", user.is_verified, "Verified");
  const admin = box("is_admin", user.is_admin, "Admin", self);
  const quota = (name, value) => h("input", { type: "number", name, min: "0", value: value ?? "", placeholder: "default" });
  const messages = quota("daily_message_quota", user.daily_message_quota);
  const tokens = quota("daily_token_quota", user.daily_token_quota);
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h(
    "form",
    { class: "user-editor", "aria-label": `Edit ${user.email}` },
    field("Username", username),
    field("Full name", fullName),
    h("div", { class: "checks" }, active, verified, admin),
    field("Answers a day (empty: the default)", messages),
    field("Tokens a day (empty: the default)", tokens),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => loadUsers(view) }, "Cancel"), save),
  );
  const checked = (label) => label.querySelector("input").checked;
  const limit = (input) => (input.value === "" ? null : Number(input.value));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(save, async () => {
      const changes = {
        username: username.value.trim(),
        full_name: fullName.value.trim() || null,
        is_verified: checked(verified),
        daily_message_quota: limit(messages),
        daily_token_quota: limit(tokens),
      };
      if (!self) Object.assign(changes, { is_active: checked(active), is_admin: checked(admin) });
      await api.call("PUT", `/admin/users/${user.id}`, changes);
      say("Saved.", "info");
      await loadUsers(view);
    });
  });
  return h("tr", { class: "editing" }, h("td", { colspan: "6" }, form));
}

async function remove(view, user, button) {
  if (!window.confirm(`Delete ${user.email}? The account can no longer sign in; its data is kept.`)) return;
  await busy(button, async () => {
    await api.call("DELETE", `/admin/users/${user.id}`);
    say(`${user.email} is deleted.`, "info");
    await loadUsers(view);
  });
}
