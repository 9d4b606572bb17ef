// Grouping a DAG by dotted task ids, so big runs stay readable.
//
// A group is a dotted prefix shared by at least two task ids: `sim.a.1` ... `sim.a.50`
// form `sim.a.*` (and `sim.*` when nothing else starts with `sim.`). A collapsed group is
// drawn as one node with the aggregated state of its members; edges between members of
// different nodes become edges between those nodes. Pure data: no DOM here.

export interface DagTask {
  id: string;
  state: string;
  deps: string[];
}

export interface Unit {
  id: string; // a task id, or "prefix.*" for a collapsed group
  group: boolean;
  prefix: string; // the group's prefix ("" for a task)
  label: string;
  members: string[];
  counts: Record<string, number>;
  state: string;
}

export interface UnitGraph {
  units: Map<string, Unit>;
  edges: Array<[string, string]>;
  unitOfTask: Map<string, string>;
}

interface TrieNode {
  path: string;
  children: Map<string, TrieNode>;
  isTask: boolean;
  below: number; // tasks strictly under this node
}

// Which state a group shows: the most pressing one among its members.
const PRECEDENCE = ["failed", "running", "submitted", "pending", "dep_failed", "cancelled", "completed"];

export function aggregateState(counts: Record<string, number>): string {
  for (const state of PRECEDENCE) if (counts[state]) return state;
  return "pending";
}

export const GROUP_SUFFIX = ".*";

export function groupUnitId(prefix: string): string {
  return prefix + GROUP_SUFFIX;
}

// A binary min-heap of [priority, value]: the default expansion picks groups cheapest first.
class MinHeap<T> {
  private items: Array<[number, T]> = [];
  get size(): number {
    return this.items.length;
  }
  push(priority: number, value: T): void {
    const items = this.items;
    items.push([priority, value]);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent][0] <= items[i][0]) break;
      [items[parent], items[i]] = [items[i], items[parent]];
      i = parent;
    }
  }
  pop(): [number, T] | undefined {
    const items = this.items;
    if (!items.length) return undefined;
    const top = items[0];
    const last = items.pop() as [number, T];
    if (items.length) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && items[l][0] < items[m][0]) m = l;
        if (r < items.length && items[r][0] < items[m][0]) m = r;
        if (m === i) break;
        [items[m], items[i]] = [items[i], items[m]];
        i = m;
      }
    }
    return top;
  }
}

export class DagGroups {
  private readonly root: TrieNode = { path: "", children: new Map(), isTask: false, below: 0 };
  private readonly nodes = new Map<string, TrieNode>();

  constructor(ids: Iterable<string>) {
    for (const id of ids) this.add(id);
  }

  private add(id: string): void {
    let node = this.root;
    const parts = id.split(".");
    for (const part of parts) {
      if (node !== this.root) node.below += 1; // a proper prefix of `id`
      let child = node.children.get(part);
      if (!child) {
        const path = node.path ? `${node.path}.${part}` : part;
        child = { path, children: new Map(), isTask: false, below: 0 };
        node.children.set(part, child);
        this.nodes.set(path, child);
      }
      node = child;
    }
    node.isTask = true;
    this.root.below += 1;
  }

  isGroup(prefix: string): boolean {
    const node = this.nodes.get(prefix);
    return !!node && node.below >= 2;
  }

  size(prefix: string): number {
    return this.nodes.get(prefix)?.below ?? 0;
  }

  get groupCount(): number {
    let n = 0;
    for (const node of this.nodes.values()) if (node.below >= 2) n++;
    return n;
  }

  // The node a task is drawn in: its own, or that of its outermost collapsed group.
  unitOf(id: string, expanded: ReadonlySet<string>): string {
    let node = this.root;
    const parts = id.split(".");
    for (let i = 0; i < parts.length - 1; i++) {
      const child = node.children.get(parts[i]);
      if (!child) return id;
      node = child;
      if (node.below >= 2 && !expanded.has(node.path)) return groupUnitId(node.path);
    }
    return id;
  }

  // Groups directly inside `prefix` ("" for the top level).
  subgroups(prefix: string): string[] {
    const node = prefix ? this.nodes.get(prefix) : this.root;
    if (!node) return [];
    return Array.from(node.children.values())
      .filter((c) => c.below >= 2)
      .map((c) => c.path);
  }

  // How many nodes `prefix` shows when expanded (its own subgroups collapsed).
  childUnits(prefix: string): number {
    const node = prefix ? this.nodes.get(prefix) : this.root;
    if (!node) return 0;
    let n = 0;
    for (const child of node.children.values()) {
      n += child.isTask ? 1 : 0;
      n += child.below >= 2 ? 1 : child.below;
    }
    return n;
  }

  // How many nodes are drawn with `expanded` groups open.
  visibleCount(expanded: ReadonlySet<string>): number {
    const walk = (node: TrieNode): number => {
      let n = 0;
      for (const child of node.children.values()) {
        n += child.isTask ? 1 : 0;
        if (child.below >= 2 && !expanded.has(child.path)) n += 1;
        else if (child.below > 0) n += walk(child);
      }
      return n;
    };
    return walk(this.root);
  }

  // Open groups, cheapest first, while the graph stays within `limit` nodes.
  defaultExpansion(limit: number): Set<string> {
    const expanded = new Set<string>();
    let count = this.childUnits("");
    const heap = new MinHeap<string>();
    for (const group of this.subgroups("")) heap.push(this.childUnits(group) - 1, group);
    while (heap.size) {
      const [delta, group] = heap.pop() as [number, string];
      if (count + delta > limit) break;
      expanded.add(group);
      count += delta;
      for (const inner of this.subgroups(group)) heap.push(this.childUnits(inner) - 1, inner);
    }
    return expanded;
  }

  // The smallest set of groups to open so that task `id` is drawn on its own.
  pathTo(id: string): string[] {
    const out: string[] = [];
    let node = this.root;
    const parts = id.split(".");
    for (let i = 0; i < parts.length - 1; i++) {
      const child = node.children.get(parts[i]);
      if (!child) break;
      node = child;
      if (node.below >= 2) out.push(node.path);
    }
    return out;
  }
}

export function buildUnits(
  tasks: ReadonlyMap<string, DagTask>,
  groups: DagGroups,
  expanded: ReadonlySet<string>,
): UnitGraph {
  const units = new Map<string, Unit>();
  const unitOfTask = new Map<string, string>();
  for (const task of tasks.values()) {
    const id = groups.unitOf(task.id, expanded);
    unitOfTask.set(task.id, id);
    let unit = units.get(id);
    if (!unit) {
      const group = id !== task.id;
      const prefix = group ? id.slice(0, -GROUP_SUFFIX.length) : "";
      unit = { id, group, prefix, label: id, members: [], counts: {}, state: "pending" };
      units.set(id, unit);
    }
    unit.members.push(task.id);
    unit.counts[task.state] = (unit.counts[task.state] ?? 0) + 1;
  }
  for (const unit of units.values()) {
    unit.state = unit.group ? aggregateState(unit.counts) : (tasks.get(unit.id)?.state ?? "pending");
  }
  const seen = new Set<string>();
  const edges: Array<[string, string]> = [];
  for (const task of tasks.values()) {
    const to = unitOfTask.get(task.id) as string;
    for (const dep of task.deps) {
      const from = unitOfTask.get(dep);
      if (from === undefined || from === to) continue;
      const key = `${from}\u0000${to}`;
      if (!seen.has(key)) {
        seen.add(key);
        edges.push([from, to]);
      }
    }
  }
  return { units, edges, unitOfTask };
}

// Only the states changed: recount the units without rebuilding edges.
export function recount(graph: UnitGraph, tasks: ReadonlyMap<string, DagTask>): void {
  for (const unit of graph.units.values()) {
    unit.counts = {};
    for (const member of unit.members) {
      const state = tasks.get(member)?.state ?? "pending";
      unit.counts[state] = (unit.counts[state] ?? 0) + 1;
    }
    unit.state = unit.group ? aggregateState(unit.counts) : (tasks.get(unit.id)?.state ?? "pending");
  }
}
