// The job list: ScriptHut's jobs and the user's others, filterable, sortable, cancellable.

import type { ScriptHutApi } from "./api";
import { clock, duration, elapsed, errorText, h, statePill, thousands, userToggle } from "./format";
import { DataStore, Row, StoreChange, frameThrottle } from "./store";
import { VirtualTable } from "./vtable";

export interface JobFilters {
  backend: string;
  state: string;
  run: string;
  text: string;
}

export interface JobTableOptions {
  api: Pick<ScriptHutApi, "cancelJob"> & Partial<Pick<ScriptHutApi, "via">>;
  filters?: Partial<JobFilters>;
  onFiltersChange?: (filters: JobFilters) => void;
  // Every user's other jobs, not only those of the server's default user filter (the
  // store's meta `default_user_filter`). The toggle shows only with `onAllUsersChange`;
  // the owner reads the jobs again and calls `setAllUsers` with what it now lists.
  allUsers?: boolean;
  onAllUsersChange?: (allUsers: boolean) => void;
  height?: number;
  table?: string; // the store's table of jobs ("jobs")
}

export interface JobTableView {
  readonly table: VirtualTable<Row>;
  setFilters(filters: Partial<JobFilters>): void;
  setAllUsers(allUsers: boolean): void;
  destroy(): void;
}

const CANCELLABLE = new Set(["pending", "running"]);
const CONFIRM_MS = 3000;

function select(label: string, name: keyof JobFilters): HTMLSelectElement {
  return h("select", { class: "sh-select", "aria-label": label, "data-filter": name });
}

function setOptions(node: HTMLSelectElement, anyLabel: string, values: string[], chosen: string): void {
  const wanted = ["", ...values];
  if (chosen && !wanted.includes(chosen)) wanted.push(chosen);
  const current = Array.from(node.options).map((o) => o.value);
  if (current.join("\u0000") !== wanted.join("\u0000")) {
    node.replaceChildren(...wanted.map((v) => h("option", { value: v }, v || anyLabel)));
  }
  node.value = chosen;
}

export function createJobTable(el: HTMLElement, store: DataStore, options: JobTableOptions): JobTableView {
  const tableName = options.table ?? "jobs";
  const filters: JobFilters = { backend: "", state: "", run: "", text: "", ...options.filters };
  const pendingCancels = new Map<string, string>(); // job key -> "confirm" | "sending" | error text
  const confirmTimers = new Map<string, number>();

  const stateSelect = select("state", "state");
  const backendSelect = select("backend", "backend");
  const runSelect = select("run", "run");
  const search = h("input", {
    class: "sh-search",
    type: "search",
    placeholder: "search name, task, job id",
    "aria-label": "search",
  });
  search.value = filters.text;
  const count = h("span", { class: "sh-count" });
  let allUsers = Boolean(options.allUsers);
  const usersButton = h("button", { class: "sh-button sh-users", type: "button", "data-filter": "users", hidden: true });
  const toolbar = h("div", { class: "sh-toolbar" }, stateSelect, backendSelect, runSelect, usersButton, search, count);

  const cancelCell = (row: Row, cell: HTMLElement) => {
    const key = String(row.key);
    const status = pendingCancels.get(key);
    const active = CANCELLABLE.has(String(row.state));
    let button = cell.firstElementChild as HTMLButtonElement | null;
    if (!active && !status) {
      if (button) cell.replaceChildren();
      return;
    }
    if (!button) {
      button = h("button", { class: "sh-button sh-cancel", type: "button" });
      cell.replaceChildren(button);
    }
    button.dataset.key = key;
    button.disabled = status === "sending" || !active;
    button.classList.toggle("sh-confirm", status === "confirm");
    button.textContent = status === "confirm" ? "confirm?" : status === "sending" ? "…" : status ? "failed" : "cancel";
    button.title = status && !["confirm", "sending"].includes(status) ? status : `cancel job ${row.job_id}`;
  };

  const table = new VirtualTable<Row>({
    rowKey: (r) => String(r.key),
    height: options.height ?? 380,
    empty: "No jobs",
    sort: { column: "submitted", descending: true },
    rowClass: (r) => (r.source === "external" ? "sh-external" : ""),
    columns: [
      {
        id: "source",
        label: "",
        width: 30,
        value: (r) => r.source,
        render: (r, cell) => {
          const mark = r.source === "external" ? "ext" : "";
          if (cell.textContent !== mark) cell.textContent = mark;
        },
        cellClass: (r) => (r.source === "external" ? "sh-ext-mark" : ""),
        title: (r) => (r.source === "external" ? "not started by ScriptHut" : ""),
      },
      { id: "backend", label: "backend", width: 90, value: (r) => r.backend },
      { id: "job_id", label: "job id", width: 150, value: (r) => r.job_id, title: (r) => String(r.job_id ?? "") },
      {
        id: "state",
        label: "state",
        width: 100,
        value: (r) => r.state,
        render: (r, cell) => {
          const text = String(r.state ?? "");
          if (cell.dataset.state !== text) {
            cell.dataset.state = text;
            cell.replaceChildren(statePill(text));
          }
        },
      },
      { id: "action", label: "", width: 76, sortable: false, value: () => null, render: cancelCell },
      { id: "run", label: "run", width: 100, value: (r) => r.run ?? "", title: (r) => String(r.run ?? "") },
      { id: "name", label: "task / name", width: 200, value: (r) => r.task ?? r.name ?? "", title: (r) => String(r.name ?? "") },
      { id: "user", label: "user", width: 80, value: (r) => r.user ?? "" },
      { id: "partition", label: "partition", width: 90, value: (r) => r.partition ?? "" },
      { id: "node", label: "node", width: 100, value: (r) => r.node ?? "" },
      { id: "cpus", label: "cpus", width: 50, align: "right", value: (r) => r.cpus ?? "" },
      { id: "submitted", label: "submitted", width: 140, value: (r) => r.submitted_at, text: (r) => clock(r.submitted_at) },
      {
        id: "elapsed",
        label: "elapsed",
        width: 80,
        align: "right",
        value: (r) => elapsed(r.started_at, r.ended_at),
        text: (r) => duration(elapsed(r.started_at, r.ended_at)),
      },
      { id: "reason", label: "reason", width: 160, value: (r) => r.reason ?? "", title: (r) => String(r.reason ?? "") },
    ],
  });

  const root = h("div", { class: "sh-jobtable" }, toolbar, table.el);
  el.append(root);

  // One pass over the rows: those the filters let through, and how many are external.
  const filtered = (rows: Row[]): { shown: Row[]; external: number } => {
    const { state, backend, run } = filters;
    const needle = filters.text.toLowerCase();
    const shown: Row[] = [];
    let external = 0;
    for (const row of rows) {
      if (state && row.state !== state) continue;
      if (backend && row.backend !== backend) continue;
      if (run && row.run !== run) continue;
      if (needle) {
        const hay = `${row.job_id ?? ""} ${row.task ?? ""} ${row.name ?? ""} ${row.user ?? ""} ${row.node ?? ""}`;
        if (!hay.toLowerCase().includes(needle)) continue;
      }
      shown.push(row);
      if (row.source === "external") external++;
    }
    return { shown, external };
  };

  const refreshOptions = (rows: Row[]) => {
    const states = new Set<string>();
    const backends = new Set<string>();
    const runs = new Set<string>();
    for (const row of rows) {
      if (row.state) states.add(String(row.state));
      if (row.backend) backends.add(String(row.backend));
      if (row.run) runs.add(String(row.run));
    }
    setOptions(stateSelect, "any state", Array.from(states).sort(), filters.state);
    setOptions(backendSelect, "any backend", Array.from(backends).sort(), filters.backend);
    setOptions(runSelect, "any run", Array.from(runs).sort(), filters.run);
  };

  const renderUsers = () => {
    const toggle = userToggle(store.meta.default_user_filter, allUsers);
    usersButton.hidden = !toggle.shown || !options.onAllUsersChange;
    usersButton.textContent = toggle.label;
    usersButton.title = toggle.title;
    usersButton.setAttribute("aria-pressed", String(allUsers));
    // What the list holds now (null: every user's), as the last read said.
    root.dataset.userFilter = String(store.meta.user_filter ?? "");
  };

  let optionsStale = true;
  const render = () => {
    const rows = store.rows(tableName);
    renderUsers();
    if (optionsStale) {
      refreshOptions(rows);
      optionsStale = false;
    }
    const { shown, external } = filtered(rows);
    table.setRows(shown);
    count.textContent =
      `${thousands(shown.length)} of ${thousands(rows.length)} jobs` +
      (external ? ` (${thousands(external)} external)` : "");
    root.dataset.jobs = String(rows.length);
  };
  const update = frameThrottle(render);

  const onChange = (change: StoreChange) => {
    const entry = change.tables.get(tableName);
    if (change.snapshot || entry?.structural || entry?.keys.size) optionsStale = true;
    if (change.snapshot || entry || change.meta.size) update();
  };
  const unsubscribe = store.subscribe(onChange);

  const filtersChanged = () => {
    options.onFiltersChange?.({ ...filters });
    update();
  };
  stateSelect.addEventListener("change", () => {
    filters.state = stateSelect.value;
    filtersChanged();
  });
  backendSelect.addEventListener("change", () => {
    filters.backend = backendSelect.value;
    filtersChanged();
  });
  runSelect.addEventListener("change", () => {
    filters.run = runSelect.value;
    filtersChanged();
  });
  usersButton.addEventListener("click", () => {
    allUsers = !allUsers;
    renderUsers();
    options.onAllUsersChange?.(allUsers);
  });
  let typing = 0;
  search.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => {
      filters.text = search.value.trim();
      filtersChanged();
    }, 150);
  });

  const resetConfirm = (key: string) => {
    window.clearTimeout(confirmTimers.get(key));
    confirmTimers.delete(key);
  };

  root.addEventListener("click", (event) => {
    const button = (event.target as HTMLElement).closest("button.sh-cancel") as HTMLButtonElement | null;
    if (!button?.dataset.key) return;
    event.stopPropagation();
    const key = button.dataset.key;
    const row = store.table(tableName).rows.get(key);
    if (!row) return;
    if (pendingCancels.get(key) !== "confirm") {
      pendingCancels.set(key, "confirm");
      resetConfirm(key);
      confirmTimers.set(
        key,
        window.setTimeout(() => {
          if (pendingCancels.get(key) === "confirm") pendingCancels.delete(key);
          table.refresh();
        }, CONFIRM_MS),
      );
      table.refresh();
      return;
    }
    resetConfirm(key);
    pendingCancels.set(key, "sending");
    table.refresh();
    options.api
      .cancelJob(String(row.backend), String(row.job_id))
      .then(() => {
        pendingCancels.delete(key);
        root.dataset.cancelledVia = options.api.via ?? "";
      })
      .catch((error) => pendingCancels.set(key, errorText(error)))
      .finally(() => table.refresh());
  });

  // Elapsed times of running jobs move on by themselves.
  const ticker = window.setInterval(() => table.refresh(), 1000);
  render();

  return {
    table,
    setFilters(next: Partial<JobFilters>) {
      Object.assign(filters, next);
      search.value = filters.text;
      optionsStale = true;
      update();
    },
    setAllUsers(next: boolean) {
      allUsers = next;
      renderUsers();
    },
    destroy() {
      unsubscribe();
      update.cancel();
      window.clearInterval(ticker);
      for (const timer of confirmTimers.values()) window.clearTimeout(timer);
      table.destroy();
      root.remove();
    },
  };
}
