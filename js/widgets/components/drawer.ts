// The task drawer: a task's log (followed while it runs, by byte offsets), its error
// log, outputs, script, resolved environment with provenance (secrets come masked), and details.

import { ApiError, LogRead, ScriptHutApi } from "./api";
import { renderMarkdown } from "./markdown";
import { showOutputs } from "./outputs";
import { clock, duration, elapsed, errorText, h, statePill, thousands } from "./format";
import type { Row } from "./store";

export interface DrawerOptions {
  api: ScriptHutApi;
  run: () => string;
  onClose: () => void;
  pollMs?: number;
  tailLines?: number;
  maxChars?: number;
  // Where the host can open an output in a document of its own (the lab: read-only tabs).
  openOutput?: (run: string, task: string, attempt: number, path: string) => void;
}

export interface DrawerView {
  readonly el: HTMLElement;
  readonly taskId: string | null;
  open(task: Row): void;
  update(task: Row): void; // the task's row changed (state, times)
  showGroup(label: string, members: Row[], onPick: (id: string) => void): void;
  showMarkdown(label: string, load: () => Promise<string>): void; // e.g. the run summary
  close(): void;
  destroy(): void;
}

type Tab = "log" | "error" | "outputs" | "script" | "env" | "details";
const TABS: Array<[Tab, string]> = [
  ["log", "Log"],
  ["error", "Errors"],
  ["outputs", "Outputs"],
  ["script", "Script"],
  ["env", "Env"],
  ["details", "Details"],
];
const NOT_STARTED = new Set(["pending", "dep_failed"]);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}

// Where an env value came from: "set by backend rule 2 (group gpu)", "built in".
function provenance(op: Row): string {
  if (op.op === "seed") return "built in";
  const rule = typeof op.rule === "number" && op.rule >= 0 ? ` rule ${op.rule + 1}` : "";
  const group = op.group ? ` (group ${op.group})` : "";
  return `${op.op} by ${op.layer}${rule}${group}`;
}

function keyValues(entries: Array<[string, unknown]>): HTMLElement {
  const list = h("dl", { class: "sh-kv" });
  for (const [key, value] of entries) {
    if (value === null || value === undefined || value === "") continue;
    list.append(h("dt", {}, key), h("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value)));
  }
  return list;
}

export function createDrawer(options: DrawerOptions): DrawerView {
  const pollMs = options.pollMs ?? 1000;
  const tailLines = options.tailLines ?? 1000;
  const maxChars = options.maxChars ?? 1_000_000;
  let task: Row | null = null;
  let tab: Tab = "log";
  let generation = 0; // bumps on every open/tab switch: stale loops and replies stop

  const title = h("span", { class: "sh-drawer-title" });
  const facts = h("span", { class: "sh-drawer-facts" });
  const closeButton = h("button", { class: "sh-button sh-close", type: "button", title: "close" }, "×");
  const tabBar = h("div", { class: "sh-tabs", role: "tablist" });
  const status = h("div", { class: "sh-drawer-status" });
  const body = h("div", { class: "sh-drawer-body" });
  const el = h(
    "div",
    { class: "sh-drawer", hidden: true },
    h("div", { class: "sh-drawer-head" }, title, facts, closeButton),
    tabBar,
    status,
    body,
  );
  for (const [id, label] of TABS) {
    const button = h("button", { class: "sh-tab", type: "button", role: "tab", "data-tab": id }, label);
    button.addEventListener("click", () => switchTo(id));
    tabBar.append(button);
  }
  closeButton.addEventListener("click", () => {
    close();
    options.onClose();
  });

  const showHead = () => {
    if (!task) return;
    title.replaceChildren(h("strong", {}, String(task.id)), " ", statePill(task.state));
    const bits: string[] = [];
    if (task.name && task.name !== task.id) bits.push(String(task.name));
    if (task.job_id) bits.push(`job ${task.job_id}`);
    if (String(task.reason ?? "").startsWith("cached:")) bits.push("cached (restored from the result cache)");
    if (task.attempt) bits.push(`attempt ${task.attempt}`);
    if (task.exit_code !== null && task.exit_code !== undefined) bits.push(`exit ${task.exit_code}`);
    const took = elapsed(task.started_at, task.ended_at);
    if (took !== null) bits.push(duration(took));
    facts.textContent = bits.join(" · ");
  };

  const switchTo = (next: Tab) => {
    tab = next;
    for (const button of Array.from(tabBar.children) as HTMLElement[]) {
      const active = button.dataset.tab === next;
      button.classList.toggle("sh-active", active);
      button.setAttribute("aria-selected", String(active));
    }
    const mine = ++generation;
    status.textContent = "";
    body.replaceChildren();
    if (!task) return;
    if (next === "log" || next === "error") void follow(mine, next === "error");
    else if (next === "outputs") {
      void showOutputs(options.api, options.run(), String(task.id), body, status, () => current(mine), options.openOutput);
    } else if (next === "script") void showScript(mine);
    else if (next === "env") void showEnv(mine);
    else void showDetails(mine);
  };

  const current = (mine: number) => mine === generation && task !== null;

  const follow = async (mine: number, error: boolean) => {
    const pre = h("pre", { class: "sh-log", "data-stream": error ? "error" : "output" });
    body.append(pre);
    const taskId = String(task?.id);
    let offset: number | null = null;
    for (;;) {
      if (!current(mine)) return;
      if (task && NOT_STARTED.has(String(task.state)) && offset === null) {
        status.textContent = task.state === "pending" ? "waiting for the task to start…" : "this task did not run";
        if (task.state !== "pending") return;
        await sleep(pollMs);
        continue;
      }
      let read: LogRead;
      try {
        read = await (offset === null
          ? options.api.log(options.run(), taskId, { error, tail: tailLines })
          : options.api.log(options.run(), taskId, { error, offset }));
      } catch (failure) {
        if (!current(mine)) return;
        status.textContent =
          failure instanceof ApiError && failure.status === 404 ? "no log yet…" : `log unavailable: ${errorText(failure)}`;
        await sleep(pollMs * 2);
        continue;
      }
      if (!current(mine)) return;
      pre.dataset.source = options.api.via;
      const atBottom = body.scrollTop + body.clientHeight >= body.scrollHeight - 8;
      if (read.text) {
        let text = (pre.textContent ?? "") + read.text;
        if (text.length > maxChars) text = "…\n" + text.slice(text.length - maxChars);
        pre.textContent = text;
        if (atBottom) body.scrollTop = body.scrollHeight;
      }
      offset = read.next_offset;
      const complete = !!read.final && read.next_offset >= read.size;
      if (read.missing) status.textContent = complete ? "no log was written" : "waiting for the log…";
      else status.textContent = complete ? `complete (${thousands(read.size)} bytes)` : "following…";
      pre.dataset.complete = String(complete);
      if (complete) return;
      if (read.next_offset < read.size) continue; // more is already there
      await sleep(pollMs);
    }
  };

  const showScript = async (mine: number) => {
    status.textContent = "loading…";
    try {
      const text = await options.api.script(options.run(), String(task?.id));
      if (!current(mine)) return;
      status.textContent = "";
      body.replaceChildren(h("pre", { class: "sh-script" }, text));
    } catch (failure) {
      if (current(mine)) status.textContent = `no script: ${errorText(failure)}`;
    }
  };

  // What the task inherits before its rules (secrets masked), and the server's credentials
  // that were withheld from it (names only).
  const inheritedLayer = (layer: Row | null): (HTMLElement | string)[] => {
    if (!layer) return [];
    const title = h("h4", { class: "sh-env-layer" }, `inherited: ${String(layer.source ?? "")}`);
    const withheld = (layer.withheld ?? []) as string[];
    const note = h("p", { class: "sh-env-withheld" }, withheld.length ? `withheld: ${withheld.join(", ")}` : "");
    if (!layer.known) return [title, note];
    const rows = Object.entries((layer.values ?? {}) as Record<string, Row>).map(([name, value]) =>
      h(
        "tr",
        { class: value.secret ? "sh-secret" : "" },
        h("td", { class: "sh-env-name" }, name),
        h("td", { class: "sh-env-value" }, String(value.value ?? "")),
      ),
    );
    const table = h("table", { class: "sh-env-inherited" }, h("tbody", {}, ...rows));
    return [title, note, table];
  };

  const showEnv = async (mine: number) => {
    status.textContent = "loading…";
    try {
      const env = await options.api.env(options.run(), String(task?.id));
      if (!current(mine)) return;
      status.textContent = env.source === "config" ? "as the config resolves it now (no attempt yet)" : "";
      const rows = Object.entries((env.values ?? {}) as Record<string, Row>).map(([name, value]) => {
        const ops = (value.ops ?? []) as Row[];
        const from = ops.map(provenance).join(" → ");
        return h(
          "tr",
          { class: value.secret ? "sh-secret" : "" },
          h("td", { class: "sh-env-name" }, name),
          h("td", { class: "sh-env-value" }, String(value.value ?? "") + (value.from_runtime ? " (+ runtime value)" : "")),
          h("td", { class: "sh-env-from" }, from),
        );
      });
      const table = h(
        "table",
        { class: "sh-env" },
        h("thead", {}, h("tr", {}, h("th", {}, "variable"), h("th", {}, "value"), h("th", {}, "provenance"))),
        h("tbody", {}, ...rows),
      );
      const warnings = ((env.warnings ?? []) as string[]).map((w) => h("li", {}, w));
      const inherited = inheritedLayer((env.inherited ?? null) as Row | null);
      body.replaceChildren(table, warnings.length ? h("ul", { class: "sh-warnings" }, ...warnings) : "", ...inherited);
    } catch (failure) {
      if (current(mine)) status.textContent = `no environment: ${errorText(failure)}`;
    }
  };

  const showDetails = async (mine: number) => {
    status.textContent = "loading…";
    try {
      const detail = await options.api.task(options.run(), String(task?.id));
      if (!current(mine)) return;
      status.textContent = "";
      const spec = (detail.spec ?? {}) as Row;
      const attempts = (detail.attempts ?? []) as Row[];
      const last = attempts[attempts.length - 1] ?? {};
      const efficiency = detail.efficiency ?? last.efficiency;
      const parts: Node[] = [
        keyValues([
          ["state", detail.state],
          ["exit code", detail.exit_code],
          ["reason", detail.reason],
          ["job id", detail.job_id],
          ["attempt", detail.attempt],
          ["submitted", clock(detail.submitted_at)],
          ["started", clock(detail.started_at)],
          ["ended", clock(detail.ended_at)],
          ["duration", duration(elapsed(detail.started_at, detail.ended_at))],
          ["generated by", detail.generated_by],
          ["command", spec.command],
          ["partition", spec.partition],
          ["cpus", spec.cpus],
          ["memory", spec.memory],
          ["time limit", spec.time_limit],
          ["working dir", spec.working_dir],
          ["deps", Array.isArray(detail.deps) && detail.deps.length ? detail.deps.join(", ") : null],
        ]),
      ];
      if (efficiency && typeof efficiency === "object") {
        parts.push(h("h4", {}, "Efficiency"), keyValues(Object.entries(efficiency as Row)));
      }
      if (attempts.length) {
        const head = h("tr", {}, ...["#", "state", "job", "exit", "started", "ended", "reason"].map((t) => h("th", {}, t)));
        const rows = attempts.map((a) =>
          h(
            "tr",
            {},
            h("td", {}, String(a.attempt)),
            h("td", {}, statePill(a.state)),
            h("td", {}, a.cached ? "cached" : String(a.job_id ?? "")),
            h("td", {}, a.exit_code === null || a.exit_code === undefined ? "" : String(a.exit_code)),
            h("td", {}, clock(a.started_at)),
            h("td", {}, clock(a.ended_at)),
            h("td", {}, String(a.reason ?? "")),
          ),
        );
        parts.push(h("h4", {}, "Attempts"), h("table", { class: "sh-attempts" }, h("thead", {}, head), h("tbody", {}, ...rows)));
      }
      body.replaceChildren(...parts);
    } catch (failure) {
      if (current(mine)) status.textContent = `no details: ${errorText(failure)}`;
    }
  };

  const close = () => {
    generation++;
    task = null;
    el.hidden = true;
    body.replaceChildren();
  };

  return {
    el,
    get taskId() {
      return task ? String(task.id) : null;
    },
    open(row: Row) {
      const same = task?.id === row.id;
      task = { ...row };
      el.hidden = false;
      el.dataset.task = String(row.id);
      tabBar.hidden = false;
      showHead();
      if (!same) switchTo("log");
    },
    update(row: Row) {
      if (!task || task.id !== row.id) return;
      const restarted = row.attempt !== task.attempt;
      task = { ...row };
      showHead();
      if (restarted && (tab === "log" || tab === "error")) switchTo(tab); // a new attempt: new log
    },
    showGroup(label: string, members: Row[], onPick: (id: string) => void) {
      generation++;
      task = null;
      el.hidden = false;
      el.dataset.task = "";
      tabBar.hidden = true;
      title.replaceChildren(h("strong", {}, label));
      facts.textContent = `${thousands(members.length)} tasks (too many to draw; pick one)`;
      status.textContent = "";
      const shown = members.slice(0, 500);
      const list = h(
        "ul",
        { class: "sh-members" },
        ...shown.map((m) => {
          const item = h("li", {}, h("a", { href: "#", "data-task-id": String(m.id) }, String(m.id)), " ", statePill(m.state));
          item.querySelector("a")?.addEventListener("click", (event) => {
            event.preventDefault();
            onPick(String(m.id));
          });
          return item;
        }),
      );
      body.replaceChildren(list, members.length > shown.length ? h("p", {}, `… and ${members.length - shown.length} more`) : "");
    },
    showMarkdown(label: string, load: () => Promise<string>) {
      const mine = ++generation;
      task = null;
      el.hidden = false;
      el.dataset.task = "";
      tabBar.hidden = true;
      title.replaceChildren(h("strong", {}, label));
      facts.textContent = "";
      status.textContent = "loading…";
      body.replaceChildren();
      load()
        .then((text) => {
          if (mine !== generation) return;
          status.textContent = text.trim() ? "" : "no task wrote a summary or outputs yet";
          body.replaceChildren(renderMarkdown(text, "sh-output-summary sh-run-summary"));
        })
        .catch((failure) => {
          if (mine === generation) status.textContent = `no summary: ${errorText(failure)}`;
        });
    },
    close,
    destroy() {
      close();
      el.remove();
    },
  };
}
