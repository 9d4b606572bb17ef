// HTML made safe to insert into the page, by the rules the server applies to a task's HTML
// outputs (scripthut/sanitize.py; a test keeps the lists equal): an allow-list of tags and
// attributes; scripts, styles, frames and the like dropped with their content; links only
// http(s), mailto and fragments; images only data: PNG/JPEG/GIF/WebP; everything else is text.
// The input is parsed by DOMParser (an inert document: nothing runs, nothing loads) and only
// fresh elements built from what the rules let through reach the page.

export const ALLOWED_TAGS = new Set([
  "a", "abbr", "b", "blockquote", "br", "caption", "code", "col",
  "colgroup", "dd", "del", "details", "div", "dl", "dt", "em",
  "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
  "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
  "p", "pre", "q", "s", "samp", "small", "span", "strong",
  "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
  "thead", "tr", "u", "ul",
]);
export const DROP_WITH_CONTENT = new Set([
  "embed", "iframe", "math", "noscript", "object", "script", "style", "svg",
  "template",
]);
export const ALLOWED_ATTRS = new Set([
  "align", "alt", "colspan", "height", "href", "id", "rowspan", "src",
  "title", "width",
]);
export const LINK_SCHEMES = [
  "#", "http://", "https://", "mailto:",
];
export const IMAGE_SCHEMES = [
  "data:image/gif;", "data:image/jpeg;",
  "data:image/png;", "data:image/webp;",
];

const HTML_NS = "http://www.w3.org/1999/xhtml";

export interface SanitizeOptions {
  // attributes the rules allow but this use drops (e.g. `id`, which inline content must not
  // set in a page it shares)
  drop?: readonly string[];
}

export function sanitizedFragment(html: string, options: SanitizeOptions = {}): DocumentFragment {
  const parsed = new DOMParser().parseFromString(html, "text/html");
  const out = document.createDocumentFragment();
  const drop = new Set(options.drop ?? []);
  for (const child of Array.from(parsed.body.childNodes)) copy(child, out, drop);
  return out;
}

function copy(node: Node, parent: Node, drop: Set<string>): void {
  if (node.nodeType === Node.TEXT_NODE) {
    parent.appendChild(document.createTextNode(node.textContent ?? ""));
    return;
  }
  if (node.nodeType !== Node.ELEMENT_NODE) return; // comments, processing instructions
  const element = node as Element;
  const tag = element.localName.toLowerCase();
  if (DROP_WITH_CONTENT.has(tag)) return;
  const into = element.namespaceURI === HTML_NS && ALLOWED_TAGS.has(tag) ? clean(element, tag, drop) : null;
  for (const child of Array.from(element.childNodes)) copy(child, into ?? parent, drop);
  if (into) parent.appendChild(into);
}

function clean(element: Element, tag: string, drop: Set<string>): HTMLElement {
  const made = document.createElement(tag);
  for (const attr of Array.from(element.attributes)) {
    const name = attr.name.toLowerCase();
    if (!drop.has(name) && allowed(tag, name, attr.value)) made.setAttribute(name, attr.value);
  }
  if (tag === "a") made.setAttribute("rel", "noopener noreferrer nofollow");
  return made;
}

export function allowed(tag: string, name: string, value: string): boolean {
  if (!ALLOWED_ATTRS.has(name)) return false;
  const plain = value.replace(/\s+/g, "").toLowerCase();
  if (name === "href") return LINK_SCHEMES.some((scheme) => plain.startsWith(scheme));
  if (name === "src") return tag === "img" && IMAGE_SCHEMES.some((scheme) => plain.startsWith(scheme));
  return true;
}
