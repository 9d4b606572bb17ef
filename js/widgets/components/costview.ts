// A run's estimated cost: the total, how many tasks could be priced, and per task.

import { h, money } from "./format";
import { DataStore, Row, frameThrottle } from "./store";
import { VirtualTable } from "./vtable";

export interface CostViewOptions {
  table?: string;
  height?: number;
}

export interface CostViewHandle {
  destroy(): void;
}

export function createCostView(el: HTMLElement, store: DataStore, options: CostViewOptions = {}): CostViewHandle {
  const tableName = options.table ?? "tasks";
  const headline = h("div", { class: "sh-cost-total" });
  const note = h("div", { class: "sh-cost-note" });
  const byPartition = h("div", { class: "sh-cost-partitions" });
  const table = new VirtualTable<Row>({
    rowKey: (r) => String(r.task),
    height: options.height ?? 300,
    empty: "No tasks",
    sort: { column: "cost", descending: true },
    rowClass: (r) => (r.cost === null || r.cost === undefined ? "sh-not-costed" : ""),
    columns: [
      { id: "task", label: "task", width: 220, value: (r) => r.task },
      { id: "state", label: "state", width: 90, value: (r) => r.state ?? "" },
      { id: "partition", label: "partition", width: 110, value: (r) => r.partition ?? "" },
      { id: "priced_as", label: "priced as", width: 120, value: (r) => r.priced_as ?? "" },
      { id: "hours", label: "hours", width: 80, align: "right", value: (r) => r.hours, text: (r) => (r.hours ?? 0).toFixed(3) },
      { id: "price", label: "$/hour", width: 80, align: "right", value: (r) => r.price, text: (r) => money(r.price) },
      {
        id: "cost",
        label: "cost",
        width: 100,
        align: "right",
        value: (r) => r.cost,
        text: (r) => (r.cost === null || r.cost === undefined ? "not costed" : money(r.cost)),
      },
    ],
  });
  const root = h("div", { class: "sh-cost" }, headline, note, byPartition, table.el);
  el.append(root);

  const render = () => {
    const meta = store.meta;
    const rows = store.rows(tableName);
    table.setRows(rows);
    root.dataset.costed = String(meta.costed ?? 0);
    if (!meta.priced) {
      headline.textContent = "No pricing table";
      note.textContent = "Add pricing.prices (and pricing.partitions) to scripthut.yaml to estimate costs.";
      byPartition.replaceChildren();
      return;
    }
    headline.replaceChildren(
      h("strong", {}, `Estimated cost ${money(meta.total)}`),
      ` — ${meta.costed ?? 0} of ${meta.tasks ?? rows.length} tasks costed`,
    );
    note.textContent = meta.running ? `${meta.running} running: counted up to now` : "";
    const sums = new Map<string, number>();
    for (const r of rows) {
      if (typeof r.cost === "number") sums.set(String(r.priced_as), (sums.get(String(r.priced_as)) ?? 0) + r.cost);
    }
    byPartition.replaceChildren(
      ...Array.from(sums.entries())
        .sort((a, b) => b[1] - a[1])
        .map(([name, sum]) => h("span", { class: "sh-chip" }, `${name}: ${money(sum)}`)),
    );
  };
  const update = frameThrottle(render);
  const unsubscribe = store.subscribe(() => update());
  if (store.loaded) render();
  return {
    destroy() {
      unsubscribe();
      update.cancel();
      table.destroy();
      root.remove();
    },
  };
}
