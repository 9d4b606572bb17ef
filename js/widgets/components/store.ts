// A view's data: meta (a flat object) and tables of rows keyed by one field.
// Filled by a snapshot, then kept current by numbered patches that hold only changes.
// Knows nothing about anywidget: the widget adapter and the lab panel both feed it.

export type Row = Record<string, any>;

export interface TableSnapshot {
  key: string;
  rows: Row[];
}

export interface SnapshotMessage {
  type: "snapshot";
  seq: number;
  meta: Row;
  tables: Record<string, TableSnapshot>;
}

export interface TablePatch {
  set?: Row[];
  del?: string[];
}

export interface PatchMessage {
  type: "patch";
  seq: number;
  meta?: Row;
  tables?: Record<string, TablePatch>;
}

export interface TableChange {
  keys: Set<string>;
  structural: boolean; // rows were added or removed
}

export interface StoreChange {
  snapshot: boolean;
  meta: Set<string>;
  tables: Map<string, TableChange>;
}

export type Listener = (change: StoreChange) => void;
export type PatchResult = "applied" | "stale" | "gap";

export class RowTable {
  readonly rows = new Map<string, Row>();
  constructor(readonly key: string) {}

  values(): Row[] {
    return Array.from(this.rows.values());
  }
}

export class DataStore {
  seq = 0;
  loaded = false;
  meta: Row = {};
  readonly tables = new Map<string, RowTable>();
  private readonly listeners = new Set<Listener>();
  private pending: PatchMessage[] = [];

  table(name: string): RowTable {
    let table = this.tables.get(name);
    if (!table) {
      table = new RowTable("id");
      this.tables.set(name, table);
    }
    return table;
  }

  rows(name: string): Row[] {
    return this.table(name).values();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  loadSnapshot(message: SnapshotMessage): boolean {
    if (!message || typeof message.seq !== "number") return false;
    if (this.loaded && message.seq < this.seq) return false;
    this.meta = { ...message.meta };
    this.tables.clear();
    for (const [name, snapshot] of Object.entries(message.tables ?? {})) {
      const table = new RowTable(snapshot.key);
      for (const row of snapshot.rows) table.rows.set(String(row[snapshot.key]), { ...row });
      this.tables.set(name, table);
    }
    this.seq = message.seq;
    this.loaded = true;
    const change: StoreChange = { snapshot: true, meta: new Set(), tables: new Map() };
    this.drainPending(change);
    this.emit(change);
    return true;
  }

  applyPatch(message: PatchMessage): PatchResult {
    if (this.loaded && message.seq <= this.seq) return "stale";
    if (!this.loaded || message.seq !== this.seq + 1) {
      this.pending.push(message);
      return "gap";
    }
    const change: StoreChange = { snapshot: false, meta: new Set(), tables: new Map() };
    this.applyOne(message, change);
    this.drainPending(change);
    this.emit(change);
    return "applied";
  }

  private drainPending(change: StoreChange): void {
    this.pending = this.pending.filter((p) => p.seq > this.seq).sort((a, b) => a.seq - b.seq);
    while (this.pending.length && this.pending[0].seq === this.seq + 1) {
      this.applyOne(this.pending.shift() as PatchMessage, change);
    }
  }

  private applyOne(message: PatchMessage, change: StoreChange): void {
    for (const [field, value] of Object.entries(message.meta ?? {})) {
      this.meta[field] = value;
      change.meta.add(field);
    }
    for (const [name, patch] of Object.entries(message.tables ?? {})) {
      const table = this.table(name);
      let entry = change.tables.get(name);
      if (!entry) {
        entry = { keys: new Set(), structural: false };
        change.tables.set(name, entry);
      }
      for (const row of patch.set ?? []) {
        const key = String(row[table.key]);
        const existing = table.rows.get(key);
        if (existing) Object.assign(existing, row);
        else {
          table.rows.set(key, { ...row });
          entry.structural = true;
        }
        entry.keys.add(key);
      }
      for (const key of patch.del ?? []) {
        if (table.rows.delete(key)) entry.structural = true;
        entry.keys.add(key);
      }
    }
    this.seq = message.seq;
  }

  private emit(change: StoreChange): void {
    for (const listener of Array.from(this.listeners)) listener(change);
  }
}

// Calls `fn` at most once per animation frame, however often it is asked.
export function frameThrottle(fn: () => void): { (): void; cancel(): void } {
  let handle = 0;
  const run = () => {
    handle = 0;
    fn();
  };
  const schedule = () => {
    if (!handle) handle = requestAnimationFrame(run);
  };
  schedule.cancel = () => {
    if (handle) cancelAnimationFrame(handle);
    handle = 0;
  };
  return schedule;
}
