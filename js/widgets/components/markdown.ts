// Markdown a task wrote (an output, its summary text, the run summary), shown rendered:
// `marked` turns it into HTML, which reaches the page only through the sanitiser that HTML
// outputs go through (no scripts, no event handlers, no javascript: URLs). Ids are dropped
// too, since this HTML shares the page. Links open in a new tab.

import { Marked } from "marked";
import { h } from "./format";
import { sanitizedFragment } from "./sanitize";

const MAX_MARKDOWN = 1_000_000;
const parser = new Marked({ async: false, gfm: true, breaks: false });

export function markdownHtml(text: string): string {
  const cut = text.length > MAX_MARKDOWN ? text.slice(0, MAX_MARKDOWN) + "\n\n…" : text;
  return parser.parse(cut, { async: false });
}

export function renderMarkdown(text: string, className = ""): HTMLElement {
  const out = h("div", { class: `sh-markdown ${className}`.trim() });
  out.append(sanitizedFragment(markdownHtml(text), { drop: ["id"] }));
  for (const link of Array.from(out.querySelectorAll("a[href]"))) {
    if (!link.getAttribute("href")?.startsWith("#")) link.setAttribute("target", "_blank");
  }
  return out;
}
