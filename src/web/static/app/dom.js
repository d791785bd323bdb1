// What every screen of the page builds with: elements made safely, messages
// to the person, and forms that wait while they work.

import { ApiError } from "./api.js";

const toast = document.getElementById("toast");

// An element; strings among the children become text nodes, never HTML.
export function h(tag, attributes = {}, ...children) {
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
export function say(words, kind = "error") {
  toast.textContent = words;
  toast.className = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (toast.hidden = true), 6000);
}

export function wordsOf(error) {
  return error instanceof ApiError ? error.words : "The server could not be reached.";
}

// Runs an action from a form: its button waits, and a failure is said in words.
export async function busy(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    say(wordsOf(error));
  } finally {
    button.disabled = false;
  }
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

