// The drawer's "Outputs" tab: what a finished task wrote in $SCRIPTHUT_OUTPUT_DIR, its
// summary text, and a preview of one file at a time. Nothing a task wrote is inserted as
// markup unsanitised: text goes in as text, Markdown (files and the summary) rendered and
// then sanitised by the HTML outputs' rules (markdown.ts), images through blob URLs in <img>
// (an SVG there runs no script), HTML (already sanitised by the server) in an iframe
// sandboxed without scripts, notebooks cell by cell as text and PNG/JPEG images.

import type { ScriptHutApi } from "./api";
import { errorText, h, thousands } from "./format";
import { renderMarkdown } from "./markdown";
import type { Row } from "./store";

const MAX_ROWS = 200;
const MAX_TEXT = 200_000;

export async function showOutputs(
  api: ScriptHutApi,
  run: string,
  task: string,
  body: HTMLElement,
  status: HTMLElement,
  current: () => boolean,
  open?: (run: string, task: string, attempt: number, path: string) => void,
): Promise<void> {
  status.textContent = "loading…";
  let listing: Row;
  try {
    listing = await api.outputs(run, task);
  } catch (failure) {
    if (current()) status.textContent = `no outputs listed: ${errorText(failure)}`;
    return;
  }
  if (!current()) return;
  const files = (listing.files ?? []) as Row[];
  const none = listing.cached
    ? "restored from the result cache: no job ran, so there is no outputs folder"
    : "the task wrote no outputs";
  status.textContent = files.length ? "" : none;
  const preview = h("div", { class: "sh-output-preview" });
  const list = h("ul", { class: "sh-outputs" });
  for (const file of files) {
    const link = h("a", { href: "#", "data-output": String(file.path) }, String(file.path));
    link.addEventListener("click", (event) => {
      event.preventDefault();
      for (const other of Array.from(list.querySelectorAll("a"))) other.classList.remove("sh-active");
      link.classList.add("sh-active");
      void preview_(api, run, task, file, Number(listing.attempt), preview, current);
    });
    const item = h("li", {}, link, h("span", { class: "sh-output-meta" }, ` ${file.kind} · ${size(Number(file.size))}`));
    if (open && file.kind === "notebook") {
      const button = h("button", { class: "sh-button sh-small", type: "button", "data-open": String(file.path) }, "Open");
      button.title = "open in a read-only notebook tab";
      button.addEventListener("click", () => open(run, task, Number(listing.attempt), String(file.path)));
      item.append(" ", button);
    }
    list.append(item);
  }
  const parts: Node[] = [];
  if (listing.summary) parts.push(renderMarkdown(String(listing.summary), "sh-output-summary"));
  if (listing.truncated) parts.push(h("p", {}, "more files than are listed"));
  body.replaceChildren(...parts, list, preview);
  const first = list.querySelector("a");
  if (first) first.dispatchEvent(new MouseEvent("click", { cancelable: true }));
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MB`;
}

async function preview_(
  api: ScriptHutApi,
  run: string,
  task: string,
  file: Row,
  attempt: number,
  into: HTMLElement,
  current: () => boolean,
): Promise<void> {
  into.replaceChildren(h("p", {}, "loading…"));
  try {
    const blob = await api.output(run, task, String(file.path), attempt || undefined);
    if (!current()) return;
    into.replaceChildren(await render(String(file.kind), String(file.path), blob));
  } catch (failure) {
    if (current()) into.replaceChildren(h("p", {}, `cannot show it: ${errorText(failure)}`));
  }
}

async function render(kind: string, path: string, blob: Blob): Promise<Node> {
  if (kind === "image") return image(blob, path);
  if (kind === "file") return download(blob, path);
  const text = await blob.text();
  if (kind === "table") return table(text, path.toLowerCase().endsWith(".tsv") ? "\t" : ",");
  if (kind === "json") return pre(pretty(text));
  if (kind === "html") return h("iframe", { class: "sh-output-html", sandbox: "", srcdoc: text, title: path });
  if (kind === "notebook") return notebook(text);
  if (kind === "markdown") return renderMarkdown(text, "sh-output-text");
  return pre(text);
}

function pre(text: string): HTMLElement {
  const cut = text.length > MAX_TEXT;
  return h("pre", { class: "sh-output-text" }, cut ? text.slice(0, MAX_TEXT) + "\n…" : text);
}

function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function image(blob: Blob, path: string): HTMLElement {
  const typed = path.toLowerCase().endsWith(".svg") ? new Blob([blob], { type: "image/svg+xml" }) : blob;
  const url = URL.createObjectURL(typed);
  const img = h("img", { class: "sh-output-image", src: url, alt: path });
  img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  return img;
}

function download(blob: Blob, path: string): HTMLElement {
  const url = URL.createObjectURL(blob);
  return h("a", { href: url, download: path.split("/").pop() ?? "output" }, `download ${path}`);
}

// A small CSV reader: quoted fields, doubled quotes, newlines inside quotes.
export function parseDelimited(text: string, delimiter: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === "") quoted = true;
    else if (c === delimiter) {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      if (rows.length > MAX_ROWS) break;
    } else field += c;
  }
  if (field !== "" || row.length) rows.push([...row, field]);
  return rows;
}

function table(text: string, delimiter: string): HTMLElement {
  const rows = parseDelimited(text, delimiter);
  const [head = [], ...rest] = rows;
  const shown = rest.slice(0, MAX_ROWS);
  return h(
    "div",
    { class: "sh-output-table" },
    h(
      "table",
      { class: "sh-attempts" },
      h("thead", {}, h("tr", {}, ...head.map((c) => h("th", {}, c)))),
      h("tbody", {}, ...shown.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))),
    ),
    rest.length > shown.length ? h("p", {}, `first ${thousands(shown.length)} rows`) : "",
  );
}

function joined(value: unknown): string {
  return Array.isArray(value) ? value.join("") : String(value ?? "");
}

function notebook(text: string): HTMLElement {
  let doc: Row;
  try {
    doc = JSON.parse(text);
  } catch {
    return pre(text);
  }
  const cells = Array.isArray(doc.cells) ? (doc.cells as Row[]) : [];
  const out = h("div", { class: "sh-notebook" });
  for (const cell of cells) {
    const kind = String(cell.cell_type);
    out.append(h("pre", { class: `sh-cell sh-cell-${kind}` }, joined(cell.source)));
    for (const output of (cell.outputs ?? []) as Row[]) out.append(cellOutput(output));
  }
  return out;
}

function cellOutput(output: Row): Node {
  if (output.output_type === "stream") return h("pre", { class: "sh-cell-output" }, joined(output.text));
  if (output.output_type === "error") {
    return h("pre", { class: "sh-cell-output sh-cell-error" }, `${output.ename}: ${output.evalue}`);
  }
  const data = (output.data ?? {}) as Row;
  for (const type of ["image/png", "image/jpeg"]) {
    if (typeof data[type] === "string") {
      return h("img", { class: "sh-output-image", src: `data:${type};base64,${String(data[type]).trim()}` });
    }
  }
  return h("pre", { class: "sh-cell-output" }, joined(data["text/plain"]));
}
