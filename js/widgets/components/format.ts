// Small shared helpers: element building, states and their colours, times and money.

export const STATES = [
  "running",
  "submitted",
  "pending",
  "completed",
  "failed",
  "dep_failed",
  "cancelled",
  "unknown",
] as const;

export const STATE_COLORS: Record<string, string> = {
  pending: "#9aa5b1",
  submitted: "#8fb8e8",
  running: "#2f80ed",
  completed: "#27ae60",
  failed: "#e5484d",
  dep_failed: "#f2994a",
  cancelled: "#7b7b7b",
  unknown: "#c4c4c4",
};

export const ACTIVE_STATES = new Set(["pending", "submitted", "running"]);
export const FINAL_STATES = new Set(["completed", "failed", "dep_failed", "cancelled"]);

export function stateColor(state: unknown): string {
  return STATE_COLORS[String(state)] ?? STATE_COLORS.unknown;
}

type Attrs = Record<string, string | number | boolean | undefined | null>;

// `h("div", {class: "x", "data-id": 3}, child, "text")`; false/undefined attrs are skipped.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Array<Node | string | null | undefined>
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
): SVGElementTagNameMap[K] {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  return node;
}

export function statePill(state: unknown): HTMLSpanElement {
  const text = String(state ?? "unknown");
  return h("span", { class: `sh-pill sh-state-${text}` }, text.replace("_", " "));
}

export function clock(ts: unknown): string {
  if (typeof ts !== "number" || !ts) return "";
  const d = new Date(ts * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const secs = s % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  return hours ? `${hours}:${pad(minutes)}:${pad(secs)}` : `${minutes}:${pad(secs)}`;
}

// Seconds from start to end, or to now while it runs; null before the start.
export function elapsed(start: unknown, end: unknown): number | null {
  if (typeof start !== "number" || !start) return null;
  const stop = typeof end === "number" && end ? end : Date.now() / 1000;
  return stop - start;
}

// 12345 -> "12,345" (not toLocaleString: its first call loads locale data, ~50 ms).
export function thousands(value: number): string {
  const [whole, fraction] = String(value).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

export function money(value: unknown): string {
  if (typeof value !== "number" || !isFinite(value)) return "";
  if (value > 0 && value < 0.005) return "<$0.01";
  const [whole, cents] = Math.abs(value).toFixed(2).split(".");
  return `${value < 0 ? "-" : ""}$${thousands(Number(whole))}.${cents}`;
}

export function countsText(counts: Record<string, number>): string {
  const parts = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s.replace("_", " ")}`);
  return parts.join(", ") || "no tasks";
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export interface UserToggle {
  shown: boolean; // the server has a default user filter (settings.filter_user)
  label: string; // what is listed now
  title: string;
}

// The job views' "only <user>'s jobs" / "all users" toggle. ScriptHut's own jobs are
// listed either way; the filter applies to the other jobs the schedulers report.
export function userToggle(defaultUser: unknown, allUsers: boolean): UserToggle {
  const user = typeof defaultUser === "string" ? defaultUser : "";
  if (!user) return { shown: false, label: "", title: "" };
  if (allUsers) {
    return {
      shown: true,
      label: "all users",
      title: `Every user's jobs are listed. Click to list only ${user}'s (and ScriptHut's).`,
    };
  }
  return {
    shown: true,
    label: `only ${user}'s jobs`,
    title: `ScriptHut's jobs and ${user}'s other jobs are listed (settings.filter_user). Click to list every user's.`,
  };
}
