// A virtualized table: only the rows in view (plus a few) exist in the DOM, so 10,000
// rows cost what 40 do. Fixed row height; sortable columns; a sticky header that scrolls
// sideways with the body.

import { h } from "./format";

export interface Column<R> {
  id: string;
  label: string;
  width: number; // px
  value: (row: R) => unknown; // what the column sorts by
  text?: (row: R) => string; // the cell's text (default: the value)
  render?: (row: R, cell: HTMLElement) => void; // or fill the cell yourself
  cellClass?: (row: R) => string;
  title?: (row: R) => string;
  align?: "left" | "right";
  sortable?: boolean;
}

export interface SortState {
  column: string;
  descending: boolean;
}

export interface VirtualTableOptions<R> {
  columns: Column<R>[];
  rowKey: (row: R) => string;
  rowHeight?: number;
  height?: number;
  overscan?: number;
  rowClass?: (row: R) => string;
  onRowClick?: (row: R, event: MouseEvent) => void;
  empty?: string;
  sort?: SortState;
}

type SortKey = number | string | null;

function sortKey(value: unknown): SortKey {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  const text = String(value);
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  return text.toLowerCase();
}

function compareKeys(a: SortKey, b: SortKey): number {
  if (a === b) return 0;
  if (a === null) return 1; // empty values last, whichever the direction
  if (b === null) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "number") return -1;
  if (typeof b === "number") return 1;
  return a < b ? -1 : 1;
}

export class VirtualTable<R> {
  readonly el: HTMLDivElement;
  private readonly options: Required<Omit<VirtualTableOptions<R>, "rowClass" | "onRowClick" | "sort">> &
    VirtualTableOptions<R>;
  private readonly head: HTMLDivElement;
  private readonly sizer: HTMLDivElement;
  private readonly emptyNote: HTMLDivElement;
  private readonly pool: HTMLDivElement[] = [];
  private rows: R[] = [];
  private sort: SortState | null;
  private frame = 0;
  private readonly template: string;

  constructor(options: VirtualTableOptions<R>) {
    this.options = { rowHeight: 26, height: 360, overscan: 8, empty: "Nothing to show", ...options };
    this.sort = options.sort ?? null;
    const widths = this.options.columns.map((c) => `${c.width}px`);
    this.template = widths.join(" ");
    const total = this.options.columns.reduce((sum, c) => sum + c.width, 0);
    this.head = h("div", { class: "sh-vt-head", role: "row" });
    this.head.style.gridTemplateColumns = this.template;
    this.head.style.width = `${total}px`;
    for (const column of this.options.columns) {
      const cell = h("div", { class: "sh-vt-th", role: "columnheader", "data-column": column.id }, column.label);
      if (column.align === "right") cell.classList.add("sh-right");
      if (column.sortable !== false) {
        cell.classList.add("sh-sortable");
        cell.addEventListener("click", () => this.toggleSort(column.id));
      }
      this.head.append(cell);
    }
    this.sizer = h("div", { class: "sh-vt-sizer" });
    this.sizer.style.width = `${total}px`;
    this.emptyNote = h("div", { class: "sh-vt-empty" }, this.options.empty);
    this.el = h("div", { class: "sh-vtable", role: "table" }, this.head, this.sizer, this.emptyNote);
    this.el.style.maxHeight = `${this.options.height}px`;
    this.el.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.sizer.addEventListener("click", (event) => this.clicked(event));
    this.showSortMark();
  }

  get rowCount(): number {
    return this.rows.length;
  }

  get sorted(): readonly R[] {
    return this.rows;
  }

  // New rows (already filtered): sorted, then the visible ones drawn.
  setRows(rows: R[]): void {
    this.rows = this.sortRows(rows);
    this.sizer.style.height = `${this.rows.length * this.options.rowHeight}px`;
    // As tall as its rows, up to `height`: a short table leaves no empty box behind.
    const natural = this.head.offsetHeight + this.rows.length * this.options.rowHeight + 2;
    this.el.style.height = `${Math.min(this.options.height, Math.max(natural, 64))}px`;
    this.emptyNote.style.display = this.rows.length ? "none" : "";
    this.el.dataset.rows = String(this.rows.length);
    this.render();
  }

  // Redraw the visible rows (their values changed, not their set or order).
  refresh(): void {
    this.render();
  }

  setSort(sort: SortState | null): void {
    this.sort = sort;
    this.showSortMark();
    this.setRows(this.rows);
  }

  destroy(): void {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.el.remove();
  }

  private toggleSort(column: string): void {
    const descending = this.sort?.column === column ? !this.sort.descending : false;
    this.setSort({ column, descending });
  }

  private showSortMark(): void {
    for (const cell of Array.from(this.head.children) as HTMLElement[]) {
      const active = this.sort?.column === cell.dataset.column;
      cell.classList.toggle("sh-sorted", active);
      cell.classList.toggle("sh-desc", active && !!this.sort?.descending);
      cell.setAttribute("aria-sort", active ? (this.sort?.descending ? "descending" : "ascending") : "none");
    }
  }

  private sortRows(rows: R[]): R[] {
    const column = this.options.columns.find((c) => c.id === this.sort?.column);
    if (!column || !this.sort) return rows.slice();
    const sign = this.sort.descending ? -1 : 1;
    const keys = rows.map((row) => sortKey(column.value(row)));
    const order = rows.map((_, index) => index);
    order.sort((a, b) => {
      const ka = keys[a];
      const kb = keys[b];
      if (ka === null || kb === null) return compareKeys(ka, kb) || a - b; // empty last
      return sign * compareKeys(ka, kb) || a - b;
    });
    return order.map((index) => rows[index]);
  }

  private schedule(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  private render(): void {
    const { rowHeight, overscan } = this.options;
    const headHeight = this.head.offsetHeight;
    const top = Math.max(0, this.el.scrollTop - headHeight);
    const viewport = this.el.clientHeight || this.options.height;
    const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
    const last = Math.min(this.rows.length, Math.ceil((top + viewport) / rowHeight) + overscan);
    let used = 0;
    for (let index = first; index < last; index++) {
      const node = this.pool[used] ?? this.makeRow();
      this.fill(node, this.rows[index], index);
      used++;
    }
    for (let i = used; i < this.pool.length; i++) this.pool[i].style.display = "none";
  }

  private makeRow(): HTMLDivElement {
    const node = h("div", { class: "sh-vt-row", role: "row" });
    node.style.gridTemplateColumns = this.template;
    node.style.height = `${this.options.rowHeight}px`;
    for (const column of this.options.columns) {
      const cell = h("div", { class: "sh-vt-td", role: "cell" });
      if (column.align === "right") cell.classList.add("sh-right");
      node.append(cell);
    }
    this.pool.push(node);
    this.sizer.append(node);
    return node;
  }

  private fill(node: HTMLDivElement, row: R, index: number): void {
    node.style.display = "";
    node.style.transform = `translateY(${index * this.options.rowHeight}px)`;
    node.dataset.index = String(index);
    node.dataset.key = this.options.rowKey(row);
    node.className = "sh-vt-row" + (this.options.rowClass ? ` ${this.options.rowClass(row)}` : "");
    const cells = node.children;
    this.options.columns.forEach((column, i) => {
      const cell = cells[i] as HTMLElement;
      const extra = column.cellClass ? column.cellClass(row) : "";
      cell.className = "sh-vt-td" + (column.align === "right" ? " sh-right" : "") + (extra ? ` ${extra}` : "");
      if (column.render) {
        column.render(row, cell);
      } else {
        const text = column.text ? column.text(row) : String(column.value(row) ?? "");
        if (cell.textContent !== text) cell.textContent = text;
      }
      const title = column.title ? column.title(row) : "";
      if (title) cell.title = title;
      else cell.removeAttribute("title");
    });
  }

  private clicked(event: MouseEvent): void {
    if (!this.options.onRowClick) return;
    const node = (event.target as HTMLElement).closest(".sh-vt-row") as HTMLElement | null;
    if (!node || node.dataset.index === undefined) return;
    const row = this.rows[Number(node.dataset.index)];
    if (row !== undefined) this.options.onRowClick(row, event);
  }
}
