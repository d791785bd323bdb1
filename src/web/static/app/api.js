// The HTTP API, as the page uses it: JSON in and out, the access token in
// memory, the refresh token in localStorage (so a reload keeps you signed in),
// one refresh when an access token has expired, and Server-Sent Events read
// from a fetch (EventSource cannot POST or send a token). Tokens never go in a URL.

const REFRESH_KEY = "gemini.refresh_token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `The server answered ${status}.`);
    this.status = status;
    this.problem = problem || {};
  }

  // The first field error's message, or the detail: what a person should read.
  get words() {
    const first = this.problem.errors?.[0];
    return first ? `${this.message} (${first.field}: ${first.message})` : this.message;
  }
}

let accessToken = null;
let refreshing = null; // one refresh at a time, shared by whoever needs it
const listeners = new Set();

export function onSignedOut(listener) {
  listeners.add(listener);
}

export function signedIn() {
  return accessToken !== null;
}

function keep(pair) {
  accessToken = pair.access_token;
  localStorage.setItem(REFRESH_KEY, pair.refresh_token);
  return pair;
}

export function forget() {
  accessToken = null;
  localStorage.removeItem(REFRESH_KEY);
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// A new token pair from the stored refresh token; false when there is none or
// the server refuses it (spent, revoked, expired: the session is over).
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const token = localStorage.getItem(REFRESH_KEY);
      if (!token) return false;
      const response = await fetch("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh_token: token }),
      });
      if (!response.ok) {
        if (response.status === 401) forget();
        return false;
      }
      keep(await response.json());
      return true;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

// fetch with the token; after a 401 one refresh and one retry, then signed out.
async function authorized(path, init = {}) {
  const send = () =>
    fetch(path, {
      ...init,
      headers: { ...init.headers, ...(accessToken ? { Authorization: `Bearer ${accessToken}` } : {}) },
    });
  let response = await send();
  if (response.status === 401 && accessToken !== null) {
    if (await refresh()) {
      response = await send();
    }
    if (response.status === 401) {
      forget();
      listeners.forEach((listener) => listener());
    }
  }
  return response;
}

export async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await authorized(path, init);
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.status === 204 ? null : response.json();
}

// Public routes (no token).
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.status === 204 ? null : response.json();
}

export async function login(email, password) {
  return keep(await post("/auth/login", { email, password }));
}

export function sendCode(email, purpose) {
  return post("/auth/send-otp", { email, purpose });
}

export async function register(email, code, username, password, fullName) {
  const user_data = { email, username, password, full_name: fullName || null };
  return keep(await post("/auth/register", { email, otp_code: code, user_data }));
}

export function resetPassword(email, code, newPassword) {
  return post("/auth/reset-password", { email, otp_code: code, new_password: newPassword });
}

export async function logout() {
  try {
    await call("POST", "/auth/logout");
  } finally {
    forget();
  }
}

// POST (or GET) a route that answers with events; calls onEvent(name, data,
// id) for each, in order, and resolves when the stream ends. A refused request
// throws ApiError before any event.
export async function stream(method, path, body, onEvent, signal) {
  const init = { method, headers: { Accept: "text/event-stream" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await authorized(path, init);
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
    // The route answered as JSON: one event, the message as stored now.
    onEvent("message", await response.json(), null);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("id:")) id = line.slice(3).trim();
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")), id);
    }
  }
}
