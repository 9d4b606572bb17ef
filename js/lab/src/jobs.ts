// The job list behind the panel (and the main-area job table): ScriptHut's jobs and the
// user's others in one DataStore table `jobs` keyed `backend/job_id`, as the JobTable
// widget's source keeps it (src/scripthut/widgets/sources.py: JobsSource).
//
// ScriptHut's jobs come and change by events (a task event carries the job id and its
// state) and stay listed once they end, up to `history` of them; the user's other jobs
// come only from `GET jobs` (`merge`), which the model calls when it refreshes. The store's
// meta says whose other jobs the last read listed (`user_filter`, null: every user's) and
// the configured default (`default_user_filter`, settings.filter_user).

import { DataStore, Row } from '../../widgets/components/store';
import type { Job } from './api';
import type { ServerEvent } from './events';

const JOB_FIELDS = [
  'backend',
  'job_id',
  'state',
  'source',
  'run',
  'task',
  'name',
  'user',
  'partition',
  'node',
  'cpus',
  'reason',
  'submitted_at',
  'started_at',
  'ended_at',
  'exit_code'
];
/** A task's state as the state of its job (a pending or dep_failed task has no job). */
const JOB_STATE_OF_TASK: Record<string, string> = {
  submitted: 'pending',
  running: 'running',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled'
};
export const FINAL_JOB_STATES = new Set(['completed', 'failed', 'cancelled']);

export class JobsFeed {
  readonly store = new DataStore();
  /** (run/task) -> the key of its current job */
  private readonly current = new Map<string, string>();

  constructor(
    private readonly backendOf: (run: string) => string | undefined,
    public history = 500
  ) {}

  get rows(): Row[] {
    return this.store.rows('jobs');
  }

  private commit(set: Row[], del: string[] = [], snapshot = false, meta: Row = {}): void {
    if (snapshot || !this.store.loaded) {
      const rows = new Map(this.store.table('jobs').rows);
      for (const key of del) {
        rows.delete(key);
      }
      for (const row of set) {
        rows.set(String(row.key), { ...(rows.get(String(row.key)) ?? {}), ...row });
      }
      this.store.loadSnapshot({
        type: 'snapshot',
        seq: this.store.seq + 1,
        meta: { ...this.store.meta, ...meta },
        tables: { jobs: { key: 'key', rows: Array.from(rows.values()) } }
      });
      return;
    }
    const changed = Object.entries(meta).filter(([k, v]) => this.store.meta[k] !== v);
    if (set.length || del.length || changed.length) {
      this.store.applyPatch({
        type: 'patch',
        seq: this.store.seq + 1,
        meta: changed.length ? Object.fromEntries(changed) : undefined,
        tables: { jobs: { set, del } }
      });
    }
  }

  /**
   * Apply `GET jobs`: new and external rows as listed; external ones gone are dropped.
   * `complete`: the list is the only source (no event stream), so ScriptHut's jobs that
   * were active and are no longer listed have ended: they are dropped too (with the
   * stream up, their final state comes as an event and they stay listed).
   * `meta`: what the read says about itself (the user filter), kept in the store's meta.
   */
  merge(jobs: Job[], complete = false, meta: Row = {}): void {
    const table = this.store.table('jobs').rows;
    const fresh = new Map<string, Job>();
    for (const job of jobs) {
      fresh.set(`${job.backend}/${job.job_id}`, job);
    }
    const set: Row[] = [];
    for (const [key, job] of fresh) {
      const row = table.get(key);
      if (!row) {
        const added: Row = { key };
        for (const f of JOB_FIELDS) {
          added[f] = job[f] ?? null;
        }
        set.push(added);
        if (job.run && job.task) {
          this.current.set(`${job.run}/${job.task}`, key);
        }
      } else {
        const changed: Row = { key };
        for (const f of JOB_FIELDS) {
          const value = job[f];
          const fill =
            row.source === 'external'
              ? value !== undefined && value !== null
              : (row[f] === null || row[f] === undefined) && value;
          if (fill && row[f] !== value) {
            changed[f] = value;
          }
        }
        if (Object.keys(changed).length > 1) {
          set.push(changed);
        }
      }
    }
    const gone = (r: Row): boolean =>
      !fresh.has(String(r.key)) &&
      (r.source === 'external' || (complete && !FINAL_JOB_STATES.has(String(r.state))));
    const del = Array.from(table.values())
      .filter(gone)
      .map(r => String(r.key));
    del.push(...this.overflow(set.length));
    this.commit(set, del, !this.store.loaded, meta);
  }

  /** Take one event: a task's job appears, changes state, ends. */
  apply(event: ServerEvent): void {
    if (event.kind !== 'task' || !event.run || !event.task) {
      return;
    }
    const run = String(event.run);
    const task = String(event.task);
    const slot = `${run}/${task}`;
    const set: Row[] = [];
    if ('job_id' in event) {
      if (event.job_id === null) {
        this.current.delete(slot); // a new attempt: its job comes later
        return;
      }
      const backend = this.backendOf(run);
      if (!backend) {
        return; // the model refreshes the list when it learns about the run
      }
      const key = `${backend}/${event.job_id}`;
      this.current.set(slot, key);
      if (!this.store.table('jobs').rows.has(key)) {
        const row: Row = { key };
        for (const f of JOB_FIELDS) {
          row[f] = null;
        }
        Object.assign(row, {
          backend,
          job_id: String(event.job_id),
          state: 'pending',
          source: 'scripthut',
          run,
          task,
          name: task
        });
        set.push(row);
      }
    }
    const key = this.current.get(slot);
    if (!key) {
      return;
    }
    const row: Row = { key };
    const state = JOB_STATE_OF_TASK[String(event.state)];
    if (state) {
      row.state = state;
    }
    for (const f of ['submitted_at', 'started_at', 'ended_at', 'exit_code', 'reason']) {
      if (f in event) {
        row[f] = event[f];
      }
    }
    set.push(row);
    this.commit(set, this.overflow(set.length));
  }

  /** Finished ScriptHut jobs beyond `history`, oldest first. */
  private overflow(adding: number): string[] {
    const rows = this.store.table('jobs').rows;
    const extra = rows.size + adding - this.history;
    if (extra <= 0) {
      return [];
    }
    return Array.from(rows.values())
      .filter(r => FINAL_JOB_STATES.has(String(r.state)))
      .sort((a, b) => (a.ended_at ?? 0) - (b.ended_at ?? 0))
      .slice(0, extra)
      .map(r => String(r.key));
  }
}
