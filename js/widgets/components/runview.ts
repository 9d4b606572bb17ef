// One run: header with actions, progress per state, the DAG (dotted-id groups collapse),
// and the task drawer.

import type { ScriptHutApi } from "./api";
import { DagGroups, DagTask, Unit, UnitGraph, buildUnits, groupUnitId, recount } from "./dag";
import { createDrawer } from "./drawer";
import { FINAL_STATES, duration, elapsed, errorText, h, statePill, thousands } from "./format";
import { createGraph } from "./graph";
import { createProgress } from "./progress";
import { DataStore, Row, StoreChange, frameThrottle } from "./store";

export interface RunViewOptions {
  api: ScriptHutApi;
  selected?: string;
  onSelect?: (taskId: string) => void;
  visibleLimit?: number; // nodes drawn by default (groups collapse beyond it)
  expandLimit?: number; // nodes a user may open up to
  table?: string;
  openOutput?: (run: string, task: string, attempt: number, path: string) => void;
}

export interface RunViewHandle {
  select(taskId: string): void;
  destroy(): void;
}

const RERUNNABLE = new Set(["failed", "dep_failed", "cancelled"]);

export function createRunView(el: HTMLElement, store: DataStore, options: RunViewOptions): RunViewHandle {
  const tableName = options.table ?? "tasks";
  const visibleLimit = options.visibleLimit ?? 60;
  const expandLimit = options.expandLimit ?? 400;

  const title = h("div", { class: "sh-run-title" });
  const actionNote = h("span", { class: "sh-action-note" });
  const cancelButton = h("button", { class: "sh-button", type: "button", "data-action": "cancel" }, "Cancel run");
  const rerunButton = h("button", { class: "sh-button", type: "button", "data-action": "rerun" }, "Rerun failed");
  const summaryButton = h("button", { class: "sh-button", type: "button", "data-action": "summary" }, "Summary");
  const header = h(
    "div",
    { class: "sh-run-head" },
    title,
    h("span", { class: "sh-spacer" }),
    actionNote,
    summaryButton,
    rerunButton,
    cancelButton,
  );
  const progress = createProgress();
  const expandAll = h("button", { class: "sh-button sh-small", type: "button" }, "Expand all");
  const collapseAll = h("button", { class: "sh-button sh-small", type: "button" }, "Collapse all");
  const chips = h("span", { class: "sh-chips" });
  const graphInfo = h("span", { class: "sh-graph-info" });
  const graphBar = h("div", { class: "sh-graph-bar" }, expandAll, collapseAll, chips, graphInfo);
  const graph = createGraph({ onUnitClick: (unit) => clicked(unit) });
  const drawer = createDrawer({
    api: options.api,
    openOutput: options.openOutput,
    run: () => String(store.meta.id ?? ""),
    onClose: () => {
      graph.select(null);
      options.onSelect?.("");
    },
  });
  const root = h("div", { class: "sh-runview" }, header, progress.el, graphBar, graph.el, drawer.el);
  el.append(root);

  let tasks = new Map<string, DagTask>();
  let groups = new DagGroups([]);
  let expanded = new Set<string>();
  let unitGraph: UnitGraph | null = null;
  let structureStale = true;
  let userExpanded = false;

  const taskRow = (id: string): Row | undefined => store.table(tableName).rows.get(id);

  const readTasks = () => {
    tasks = new Map();
    for (const row of store.rows(tableName)) {
      tasks.set(String(row.id), { id: String(row.id), state: String(row.state), deps: (row.deps ?? []) as string[] });
    }
  };

  const relayout = () => {
    unitGraph = buildUnits(tasks, groups, expanded);
    graph.draw(unitGraph);
    graph.select(drawer.taskId ? (unitGraph.unitOfTask.get(drawer.taskId) ?? null) : null);
    const openGroups = Array.from(expanded).filter((g) => groups.isGroup(g)).sort();
    chips.replaceChildren(
      ...openGroups.map((g) =>
        h("button", { class: "sh-chip", type: "button", "data-group": g, title: `collapse ${g}.*` }, `${g}.* ▾`),
      ),
    );
    const units = unitGraph.units.size;
    graphInfo.textContent =
      units === tasks.size ? `${tasks.size} tasks` : `${thousands(tasks.size)} tasks in ${units} nodes`;
    expandAll.disabled = tasks.size > expandLimit;
    expandAll.title = expandAll.disabled ? `more than ${expandLimit} tasks: open groups one by one` : "";
    root.dataset.units = String(units);
  };

  const showHeader = () => {
    const meta = store.meta;
    const name = meta.name && meta.name !== meta.id ? `${meta.name} ` : "";
    const took = elapsed(meta.started_at, meta.ended_at);
    title.replaceChildren(
      h("strong", {}, `${name}`),
      h("code", { class: "sh-run-id" }, String(meta.id ?? "")),
      " ",
      statePill(meta.state),
      h("span", { class: "sh-run-facts" }, ` on ${meta.backend ?? "?"}${took !== null ? ` · ${duration(took)}` : ""}`),
    );
    const state = String(meta.state ?? "");
    cancelButton.hidden = FINAL_STATES.has(state) || state === "cancelled";
    const counts = (meta.counts ?? {}) as Record<string, number>;
    rerunButton.hidden = !FINAL_STATES.has(state) || !Array.from(RERUNNABLE).some((s) => counts[s]);
    progress.update(counts, typeof meta.total === "number" ? meta.total : undefined);
    root.dataset.state = state;
  };

  const render = () => {
    showHeader();
    if (structureStale) {
      readTasks();
      const ids = Array.from(tasks.keys());
      const before = groups;
      groups = new DagGroups(ids);
      if (!userExpanded || before.groupCount === 0) expanded = groups.defaultExpansion(visibleLimit);
      structureStale = false;
      relayout();
    } else if (unitGraph) {
      for (const row of store.rows(tableName)) {
        const task = tasks.get(String(row.id));
        if (task) task.state = String(row.state);
      }
      recount(unitGraph, tasks);
      graph.recolor(unitGraph);
    }
    const open = drawer.taskId ? taskRow(drawer.taskId) : undefined;
    if (open) drawer.update(open);
  };
  const update = frameThrottle(render);

  const openTask = (taskId: string) => {
    const row = taskRow(taskId);
    if (!row) return;
    const path = groups.pathTo(taskId).filter((g) => !expanded.has(g));
    if (path.length && groups.visibleCount(new Set([...expanded, ...path])) <= expandLimit) {
      for (const g of path) expanded.add(g);
      userExpanded = true;
      relayout();
    }
    drawer.open(row);
    graph.select(unitGraph?.unitOfTask.get(taskId) ?? null);
    options.onSelect?.(taskId);
  };

  const clicked = (unit: Unit) => {
    if (!unit.group) {
      openTask(unit.id);
      return;
    }
    const next = new Set(expanded);
    next.add(unit.prefix);
    if (groups.visibleCount(next) <= expandLimit) {
      expanded = next;
      userExpanded = true;
      relayout();
      return;
    }
    const members = unit.members.map((id) => taskRow(id) ?? { id, state: "pending" });
    drawer.showGroup(groupUnitId(unit.prefix), members, openTask);
    graph.select(unit.id);
  };

  chips.addEventListener("click", (event) => {
    const chip = (event.target as HTMLElement).closest("[data-group]") as HTMLElement | null;
    if (!chip?.dataset.group) return;
    const prefix = chip.dataset.group;
    expanded = new Set(Array.from(expanded).filter((g) => g !== prefix && !g.startsWith(prefix + ".")));
    userExpanded = true;
    relayout();
  });
  expandAll.addEventListener("click", () => {
    expanded = new Set(Array.from(tasks.keys()).flatMap((id) => groups.pathTo(id)));
    userExpanded = true;
    relayout();
  });
  collapseAll.addEventListener("click", () => {
    expanded = new Set();
    userExpanded = true;
    relayout();
  });

  const act = (button: HTMLButtonElement, action: () => Promise<unknown>, doing: string) => {
    button.disabled = true;
    actionNote.textContent = doing;
    action()
      .then(() => (actionNote.textContent = ""))
      .catch((error) => (actionNote.textContent = errorText(error)))
      .finally(() => (button.disabled = false));
  };
  cancelButton.addEventListener("click", () => {
    if (cancelButton.dataset.confirm !== "1") {
      cancelButton.dataset.confirm = "1";
      cancelButton.textContent = "Really cancel?";
      window.setTimeout(() => {
        cancelButton.dataset.confirm = "";
        cancelButton.textContent = "Cancel run";
      }, 3000);
      return;
    }
    cancelButton.dataset.confirm = "";
    cancelButton.textContent = "Cancel run";
    act(cancelButton, () => options.api.cancelRun(String(store.meta.id)), "cancelling…");
  });
  summaryButton.addEventListener("click", () => {
    graph.select(null);
    drawer.showMarkdown("Run summary", () =>
      options.api.summary(String(store.meta.id)).then((reply) => String(reply.markdown ?? "")),
    );
  });
  rerunButton.addEventListener("click", () =>
    act(rerunButton, () => options.api.rerunRun(String(store.meta.id)), "starting again…"),
  );

  const onChange = (change: StoreChange) => {
    const entry = change.tables.get(tableName);
    if (change.snapshot || entry?.structural) structureStale = true;
    else if (entry) {
      for (const key of entry.keys) {
        const row = taskRow(key);
        const known = tasks.get(key);
        if (row && known && (row.deps ?? []).length !== known.deps.length) structureStale = true;
      }
    }
    update();
  };
  const unsubscribe = store.subscribe(onChange);
  const ticker = window.setInterval(() => {
    if (!FINAL_STATES.has(String(store.meta.state))) showHeader();
  }, 1000);

  if (store.loaded) render();
  if (options.selected) openTask(options.selected);

  return {
    select: openTask,
    destroy() {
      unsubscribe();
      update.cancel();
      window.clearInterval(ticker);
      graph.destroy();
      drawer.destroy();
      root.remove();
    },
  };
}
