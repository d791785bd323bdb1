// A model's answer as HTML: markdown (marked), then sanitised (DOMPurify)
// before it reaches the DOM. Whatever the model writes, no script runs: no
// <script>, no event handler attributes, no javascript: or data: links, no
// forms or frames. Links open in a new tab without telling the site where
// from; images load only from this server (the page's Content-Security-Policy
// says so too).

import { marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

marked.use({ gfm: true, breaks: true });

const SAFE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    const href = node.getAttribute("href");
    if (!/^(https?:|mailto:|#|\/)/i.test(href)) {
      node.removeAttribute("href");
    } else {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  }
  if (node.tagName === "IMG") {
    const src = node.getAttribute("src") || "";
    if (!src.startsWith("/")) node.removeAttribute("src");
  }
});

export function renderMarkdown(text) {
  const html = marked.parse(text || "", { async: false });
  const fragment = DOMPurify.sanitize(html, SAFE);
  const wrapper = document.createElement("div");
  wrapper.className = "markdown";
  wrapper.append(fragment);
  return wrapper;
}
