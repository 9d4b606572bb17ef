// Feeds fill the shared components' DataStore from the REST API and the event stream,
// as the kernel-side sources of the notebook widgets do (src/scripthut/widgets/sources.py):
// a snapshot from one GET, then one patch per event. Same tables, same keys, same rows,
// so the components cannot tell the lab panel from a widget.

import type { DataStore, PatchMessage, Row } from '../../widgets/components/store';
import type { ScriptHutClient } from './api';
import type { ServerEvent } from './events';

export const TASK_FIELDS = [
  'id',
  'name',
  'state',
  'deps',
  'attempt',
  'job_id',
  'exit_code',
  'reason',
  'submitted_at',
  'started_at',
  'ended_at',
  'generated_by'
];
const TASK_EVENT_FIELDS = [
  'state',
  'attempt',
  'job_id',
  'exit_code',
  'reason',
  'submitted_at',
  'started_at',
  'ended_at'
];
export const RUN_FIELDS = [
  'id',
  'name',
  'backend',
  'state',
  'created_at',
  'started_at',
  'ended_at',
  'counts',
  'total',
  'message',
  'cancel_requested'
];
const RUN_EVENT_FIELDS = ['state', 'counts', 'total', 'started_at', 'ended_at', 'message'];

export function pick(data: Row, fields: string[]): Row {
  const out: Row = {};
  for (const f of fields) {
    out[f] = data[f] ?? null;
  }
  return out;
}

function present(data: Row, fields: string[]): Row {
  const out: Row = {};
  for (const f of fields) {
    if (f in data) {
      out[f] = data[f];
    }
  }
  return out;
}

/** Something that keeps a store current: `load` (a snapshot), then `apply` per event. */
export interface Feed {
  readonly store: DataStore;
  load(client: ScriptHutClient): Promise<void>;
  apply(event: ServerEvent): void;
}

abstract class BaseFeed implements Feed {
  constructor(readonly store: DataStore) {}

  abstract load(client: ScriptHutClient): Promise<void>;
  abstract apply(event: ServerEvent): void;

  protected snapshot(meta: Row, tables: Record<string, { key: string; rows: Row[] }>): void {
    this.store.loadSnapshot({ type: 'snapshot', seq: this.store.seq + 1, meta, tables });
  }

  protected patch(message: Omit<PatchMessage, 'type' | 'seq'>): void {
    if (!this.store.loaded) {
      return; // the snapshot that comes next has it
    }
    this.store.applyPatch({ type: 'patch', seq: this.store.seq + 1, ...message });
  }
}

/** One run: meta is the run, table `tasks` keyed by `id` (the RunView's data). */
export class RunFeed extends BaseFeed {
  constructor(
    store: DataStore,
    public runId: string
  ) {
    super(store);
  }

  async load(client: ScriptHutClient): Promise<void> {
    const record = await client.run(this.runId, true);
    this.runId = String(record.id);
    const rows = (record.tasks ?? []).map(t => pick(t, TASK_FIELDS));
    this.snapshot(pick(record, RUN_FIELDS), { tasks: { key: 'id', rows } });
  }

  apply(event: ServerEvent): void {
    if (event.run !== this.runId) {
      return;
    }
    if (event.kind === 'task' && event.task) {
      const id = String(event.task);
      const known = this.store.table('tasks').rows.get(id);
      const row: Row = { id, ...present(event, TASK_EVENT_FIELDS) };
      if (!known) {
        Object.assign(row, { name: id, deps: [], state: 'pending', ...row });
      }
      this.patch({ tables: { tasks: { set: [row] } } });
    } else if (event.kind === 'tasks_added') {
      const rows = ((event.tasks ?? []) as Row[]).map(t => pick(t, TASK_FIELDS));
      this.patch({ tables: { tasks: { set: rows } } });
    } else if (event.kind === 'run') {
      this.patch({ meta: present(event, RUN_EVENT_FIELDS) });
    }
  }
}

/** Start and end of one run's tasks that started: table `bars` keyed `run/task`. */
export class TimelineFeed extends BaseFeed {
  private backend = '?';
  private name = '';

  constructor(
    store: DataStore,
    public runId: string
  ) {
    super(store);
  }

  private bar(task: string, fields: Row): Row {
    return {
      key: `${this.runId}/${task}`,
      run: this.runId,
      task,
      backend: this.backend,
      ...present(fields, ['state', 'submitted_at', 'started_at', 'ended_at'])
    };
  }

  async load(client: ScriptHutClient): Promise<void> {
    const record = await client.run(this.runId, true);
    this.runId = String(record.id);
    this.backend = String(record.backend ?? '?');
    this.name = String(record.name ?? record.id);
    const rows = (record.tasks ?? []).filter(t => t.started_at).map(t => this.bar(String(t.id), t));
    this.snapshot(
      { run: this.runId, runs: { [this.runId]: this.name } },
      { bars: { key: 'key', rows } }
    );
  }

  apply(event: ServerEvent): void {
    if (event.run !== this.runId || event.kind !== 'task' || !event.task) {
      return;
    }
    const task = String(event.task);
    const key = `${this.runId}/${task}`;
    const known = this.store.table('bars').rows.get(key);
    if ('started_at' in event && !event.started_at) {
      if (known) {
        this.patch({ tables: { bars: { del: [key] } } }); // a new attempt, not started yet
      }
      return;
    }
    if (!known && !event.started_at) {
      return; // drawn once it starts
    }
    const row = this.bar(task, event);
    if (!known) {
      Object.assign(row, {
        state: null,
        submitted_at: null,
        started_at: null,
        ended_at: null,
        ...row
      });
    }
    this.patch({ tables: { bars: { set: [row] } } });
  }
}
