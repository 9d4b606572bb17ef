// Unit tests of the front end's pure parts, run by test_js_units.py under `node --test`
// (bundled by esbuild first): DAG grouping, the store's patch protocol, lane packing, the
// user filter toggle and the panel's job list.

import assert from "node:assert/strict";
import { test } from "node:test";
import { DagGroups, DagTask, aggregateState, buildUnits, recount } from "../../js/widgets/components/dag";
import { DataStore, PatchMessage, SnapshotMessage } from "../../js/widgets/components/store";
import { userToggle } from "../../js/widgets/components/format";
import { packLanes } from "../../js/widgets/components/timeline";
import { JobsFeed } from "../../js/lab/src/jobs";

function sims(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `sim.a.${i + 1}`);
}

test("dotted ids form groups of two or more", () => {
  const groups = new DagGroups(["prep", ...sims(50), "sim.b.1", "sim.b.2", "sim.c.1", "report"]);
  assert.equal(groups.isGroup("sim.a"), true);
  assert.equal(groups.size("sim.a"), 50);
  assert.equal(groups.size("sim"), 53);
  assert.equal(groups.isGroup("sim.c"), false); // one task is no group
  assert.equal(groups.isGroup("prep"), false);
  const none = new Set<string>();
  assert.equal(groups.unitOf("sim.a.7", none), "sim.*");
  assert.equal(groups.unitOf("sim.a.7", new Set(["sim"])), "sim.a.*");
  assert.equal(groups.unitOf("sim.c.1", new Set(["sim"])), "sim.c.1");
  assert.equal(groups.unitOf("sim.a.7", new Set(["sim", "sim.a"])), "sim.a.7");
  assert.equal(groups.unitOf("prep", none), "prep");
  assert.equal(groups.visibleCount(none), 3);
  assert.equal(groups.visibleCount(new Set(["sim"])), 5);
  assert.equal(groups.childUnits("sim"), 3);
  assert.deepEqual(groups.pathTo("sim.a.7"), ["sim", "sim.a"]);
});

test("a task whose id prefixes others stays its own node", () => {
  const groups = new DagGroups(["fit", "fit.1", "fit.2"]);
  assert.equal(groups.unitOf("fit", new Set()), "fit");
  assert.equal(groups.unitOf("fit.2", new Set()), "fit.*");
  assert.equal(groups.visibleCount(new Set()), 2);
});

test("the default expansion keeps big graphs within the limit and opens small ones fully", () => {
  const small = new DagGroups(["prepare", "square.1", "square.2", "square.3", "square.4", "total"]);
  assert.deepEqual(Array.from(small.defaultExpansion(60)), ["square"]);
  const grid = (groupsOf: number) => [
    "prep",
    ...Array.from({ length: groupsOf }, (_, g) => Array.from({ length: 100 }, (_, i) => `sim.g${g}.${i}`)).flat(),
  ];
  const twenty = new DagGroups(grid(20)); // 2,001 tasks
  const opened = twenty.defaultExpansion(60);
  assert.deepEqual(Array.from(opened), ["sim"]); // 21 nodes; any g-group would add 99
  assert.equal(twenty.visibleCount(opened), 21);
  const hundred = new DagGroups(grid(100)); // 10,001 tasks: opening sim would draw 101 nodes
  assert.equal(hundred.defaultExpansion(60).size, 0);
  assert.equal(hundred.visibleCount(new Set()), 2);
});

test("units aggregate states and edges between groups are deduplicated", () => {
  const tasks = new Map<string, DagTask>();
  const add = (id: string, state: string, deps: string[] = []) => tasks.set(id, { id, state, deps });
  add("prep", "completed");
  for (let i = 1; i <= 4; i++) add(`sim.${i}`, i === 2 ? "failed" : "completed", ["prep"]);
  add("report", "dep_failed", ["sim.1", "sim.2", "sim.3", "sim.4"]);
  const groups = new DagGroups(tasks.keys());
  const collapsed = buildUnits(tasks, groups, new Set());
  assert.deepEqual(Array.from(collapsed.units.keys()), ["prep", "sim.*", "report"]);
  assert.deepEqual(collapsed.edges, [
    ["prep", "sim.*"],
    ["sim.*", "report"],
  ]);
  const sim = collapsed.units.get("sim.*")!;
  assert.deepEqual(sim.counts, { completed: 3, failed: 1 });
  assert.equal(sim.state, "failed");
  const open = buildUnits(tasks, groups, new Set(["sim"]));
  assert.equal(open.units.size, 6);
  assert.equal(open.edges.length, 8);
  tasks.get("sim.2")!.state = "completed";
  recount(collapsed, tasks);
  assert.equal(collapsed.units.get("sim.*")!.state, "completed");
  assert.equal(aggregateState({ pending: 2, running: 1, completed: 5 }), "running");
});

function snapshot(seq: number, states: Record<string, string>): SnapshotMessage {
  return {
    type: "snapshot",
    seq,
    meta: { state: "running" },
    tables: { tasks: { key: "id", rows: Object.entries(states).map(([id, state]) => ({ id, state, deps: [] })) } },
  };
}

function patch(seq: number, set: Array<Record<string, unknown>>, del: string[] = []): PatchMessage {
  return { type: "patch", seq, tables: { tasks: { set, del } } };
}

test("the store applies patches in order and reports gaps", () => {
  const store = new DataStore();
  const seen: boolean[] = [];
  store.subscribe((change) => seen.push(change.snapshot));
  assert.equal(store.applyPatch(patch(2, [{ id: "a", state: "running" }])), "gap"); // before any snapshot
  store.loadSnapshot(snapshot(1, { a: "pending", b: "pending" }));
  assert.equal(store.table("tasks").rows.get("a")!.state, "running"); // the buffered patch followed
  assert.equal(store.seq, 2);
  assert.equal(store.applyPatch(patch(2, [{ id: "a", state: "failed" }])), "stale");
  assert.equal(store.applyPatch(patch(4, [{ id: "b", state: "completed" }])), "gap");
  assert.equal(store.table("tasks").rows.get("b")!.state, "pending");
  assert.equal(store.applyPatch(patch(3, [{ id: "c", state: "pending" }], ["a"])), "applied");
  assert.equal(store.seq, 4); // 3 and the waiting 4
  assert.deepEqual(Array.from(store.table("tasks").rows.keys()).sort(), ["b", "c"]);
  assert.equal(store.table("tasks").rows.get("b")!.state, "completed");
  assert.deepEqual(store.table("tasks").rows.get("b")!.deps, []); // fields not in a patch stay
  assert.equal(store.loadSnapshot(snapshot(3, { z: "pending" })), false); // older than held
  assert.equal(store.loadSnapshot(snapshot(9, { z: "pending" })), true);
  assert.deepEqual(Array.from(store.table("tasks").rows.keys()), ["z"]);
  assert.deepEqual(seen, [true, false, true]);
});

test("lanes: concurrent bars stack, sequential ones share a lane", () => {
  const lanes = packLanes([
    { start: 0, end: 10 },
    { start: 5, end: 15 },
    { start: 10, end: 20 },
    { start: 16, end: 30 },
    { start: 1, end: 2 },
  ]);
  assert.deepEqual(lanes, [0, 1, 0, 1, 1]); // the short bar at 1-2 frees lane 1 for 5-15
});

test("the user filter toggle shows only when the server has a default user", () => {
  assert.equal(userToggle(null, false).shown, false);
  assert.equal(userToggle("", true).shown, false);
  const only = userToggle("alice", false);
  assert.equal(only.shown, true);
  assert.equal(only.label, "only alice's jobs");
  assert.match(only.title, /every user's/);
  assert.equal(userToggle("alice", true).label, "all users");
});

test("the panel's job list keeps whose jobs it holds, and drops the others when filtered again", () => {
  const feed = new JobsFeed(() => "hpc");
  const job = (id: string, user: string) => ({ backend: "hpc", job_id: id, state: "running", source: "external" as const, user });
  const changes: Array<Set<string>> = [];
  feed.store.subscribe((change) => changes.push(change.meta));
  feed.merge([job("1", "alice")], false, { user_filter: "alice", default_user_filter: "alice" });
  assert.deepEqual(feed.store.meta, { user_filter: "alice", default_user_filter: "alice" });
  feed.merge([job("1", "alice"), job("2", "bob")], false, { user_filter: null, default_user_filter: "alice" });
  assert.equal(feed.store.meta.user_filter, null);
  assert.deepEqual(feed.rows.map((r) => r.key).sort(), ["hpc/1", "hpc/2"]);
  assert.deepEqual(Array.from(changes[1]), ["user_filter"]); // a patch carries what changed
  feed.merge([job("1", "alice")], false, { user_filter: "alice", default_user_filter: "alice" });
  assert.deepEqual(feed.rows.map((r) => r.key), ["hpc/1"]);
  assert.equal(feed.store.meta.user_filter, "alice");
  const before = changes.length;
  feed.merge([job("1", "alice")], false, { user_filter: "alice", default_user_filter: "alice" });
  assert.equal(changes.length, before); // nothing changed: no patch
});
