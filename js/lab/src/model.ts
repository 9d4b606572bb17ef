// What the panel shows and how it stays current.
//
// One model per page. It reads health, backends, runs and jobs from the REST API, then
// follows the event stream: while the stream is open the model sends no request of its
// own on a timer (run and job changes come as events; the user's other jobs and the
// backends' CPU counts are re-read only after activity, at most every few seconds). When
// the stream is down, a @lumino/polling Poll refreshes everything at the fallback
// interval, backing off on errors up to the maximum, and tries to reopen the stream.
// Nobody looking (panel hidden, no run view shown, browser tab hidden): no stream, no poll.

import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, Backends, Health, NetworkError, Run, ScriptHutClient, describe } from './api';
import { EventStream, ServerEvent, StreamState } from './events';
import { JobsFeed } from './jobs';

/** What the panel says about the server side as a whole. */
export type Status =
  | 'loading' // first answer not in yet
  | 'ok'
  | 'not_installed' // GET health is 404: no ScriptHut server extension
  | 'config_error' // scripthut.yaml is broken (health says so; everything else is 503)
  | 'error' // the extension could not start (store, engine)
  | 'forbidden' // 403: not allowed (JupyterHub scopes) or logged out
  | 'offline'; // no answer: the Jupyter server is down or unreachable

/** How the model is kept current right now. */
export type Connection = 'live' | 'polling' | 'paused' | 'connecting';

export interface ModelSettings {
  /** Seconds between refreshes while the event stream is down. */
  refreshInterval: number;
  /** Longest interval the fallback backs off to after errors, in seconds. */
  maxRefreshInterval: number;
  /** How many runs to list. */
  runsShown: number;
  /** Finished ScriptHut jobs kept in the job list. */
  jobsHistory: number;
  /** Every user's other jobs, not only those of settings.filter_user (`GET jobs?all=true`). */
  allUsers: boolean;
}

export const DEFAULT_SETTINGS: ModelSettings = {
  refreshInterval: 10,
  maxRefreshInterval: 120,
  runsShown: 20,
  jobsHistory: 500,
  allUsers: false
};

/** Quiet period after activity before the external parts are re-read, and their minimum gap. */
const ACTIVITY_DELAY_MS = 1500;
const JOBS_MIN_GAP_MS = 5000;
const BACKENDS_MIN_GAP_MS = 30000;
/** A stream that lived this long was a real connection: reconnect at once when it ends. */
const STREAM_HEALTHY_MS = 5000;

export class ScriptHutModel {
  readonly jobs: JobsFeed;
  status: Status = 'loading';
  message = '';
  health: Health | null = null;
  backends: Backends | null = null;
  backendsError = '';
  runs: Run[] = [];
  runsTotal = 0;
  /** Runs whose backend the model knows (for job keys), whether listed or not. */
  private readonly runBackends = new Map<string, string>();
  private settings: ModelSettings = { ...DEFAULT_SETTINGS };
  private readonly stream: EventStream;
  private readonly poll: Poll;
  private readonly interest = new Set<unknown>();
  private readonly _changed = new Signal<this, void>(this);
  private readonly _event = new Signal<this, ServerEvent>(this);
  private readonly _refreshed = new Signal<this, void>(this);
  private readonly _configChanged = new Signal<this, void>(this);
  private streamOpenedAt = 0;
  private lastRefresh = 0;
  private lastJobs = 0;
  private lastBackends = 0;
  private activityTimer = 0;
  /** The next refresh re-reads the backends too (they are costly: SSH, sinfo). */
  private forceBackends = true;
  /** The next tick runs even while the stream is up (the refresh button). */
  private forced = false;
  private loadingRuns = new Set<string>();
  private disposed = false;

  constructor(readonly client: ScriptHutClient) {
    this.jobs = new JobsFeed(run => this.runBackends.get(run), this.settings.jobsHistory);
    this.stream = new EventStream(client);
    this.stream.event.connect((_, event) => this.onEvent(event));
    this.stream.stateChanged.connect((_, state) => this.onStreamState(state));
    this.stream.failed.connect((_, error) => this.onStreamEnded(error));
    this.poll = new Poll({
      auto: false,
      factory: () => this.tick(),
      frequency: this.frequency(),
      name: 'scripthut:model',
      standby: () => !this.forced && (!this.active || this.stream.state === 'open')
    });
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Any change of what the panel shows. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Every event of the stream (run views take theirs from here). */
  get event(): ISignal<this, ServerEvent> {
    return this._event;
  }

  /** After each full refresh (run views reload then when the stream is down). */
  get refreshed(): ISignal<this, void> {
    return this._refreshed;
  }

  /** The server read its configuration again (a `config` event): views re-read it. */
  get configChanged(): ISignal<this, void> {
    return this._configChanged;
  }

  get streamState(): StreamState {
    return this.stream.state;
  }

  get lastEventId(): number | null {
    return this.stream.lastId;
  }

  get connection(): Connection {
    if (!this.active) {
      return 'paused';
    }
    if (this.stream.state === 'open') {
      return 'live';
    }
    return this.stream.state === 'connecting' ? 'connecting' : 'polling';
  }

  /** The stream is open: views must not poll. */
  get live(): boolean {
    return this.stream.state === 'open';
  }

  get ready(): boolean {
    return this.status === 'ok';
  }

  private get active(): boolean {
    return this.interest.size > 0 && !document.hidden && !this.disposed;
  }

  /** The job list asks for every user's other jobs (see `ModelSettings.allUsers`). */
  get allUsers(): boolean {
    return this.settings.allUsers;
  }

  /** Whose other jobs the job list holds, as its last read said (null: every user's). */
  get userFilter(): string | null {
    return (this.jobs.store.meta.user_filter as string | null | undefined) ?? null;
  }

  /** settings.filter_user of the server's scripthut.yaml (null: none, no toggle). */
  get defaultUserFilter(): string | null {
    return (this.jobs.store.meta.default_user_filter as string | null | undefined) ?? null;
  }

  configure(settings: Partial<ModelSettings>): void {
    const before = this.settings;
    this.settings = { ...before, ...settings };
    this.jobs.history = this.settings.jobsHistory;
    if (this.settings.allUsers !== before.allUsers) {
      this.reloadJobs();
      const keys = Object.keys(this.settings) as (keyof ModelSettings)[];
      if (keys.every(k => k === 'allUsers' || this.settings[k] === before[k])) {
        return; // the toggle alone: no need to restart the poll
      }
    }
    void this.poll.stop().then(() => {
      this.poll.frequency = this.frequency();
      this.wake();
    });
  }

  private frequency(): IPoll.Frequency {
    const interval = Math.max(2, this.settings.refreshInterval) * 1000;
    const max = Math.max(interval, this.settings.maxRefreshInterval * 1000);
    return { interval, max, backoff: true };
  }

  /**
   * Someone shows model data (the panel while visible, a run view while visible).
   * Streaming and polling happen only while someone does.
   */
  setInterest(owner: unknown, interested: boolean): void {
    const was = this.active;
    if (interested) {
      this.interest.add(owner);
    } else {
      this.interest.delete(owner);
    }
    if (this.active !== was) {
      this.activeChanged();
    }
  }

  /** Refresh everything now (the refresh button), backends' cluster info included. */
  refresh(): Promise<void> {
    this.forceBackends = true;
    this.forced = true; // a refresh asked for runs even while the stream is up
    return this.poll.refresh();
  }

  dispose(): void {
    this.disposed = true;
    document.removeEventListener('visibilitychange', this.onVisibility);
    window.clearTimeout(this.activityTimer);
    this.stream.close();
    this.poll.dispose();
    Signal.clearData(this);
  }

  private readonly onVisibility = (): void => this.activeChanged();

  private activeChanged(): void {
    if (this.active) {
      this.wake();
    } else {
      this.stream.close();
    }
    this._changed.emit();
  }

  /** Start the poll (first time) or tick now; a recent refresh only reopens the stream. */
  private wake(): void {
    if (!this.active) {
      return;
    }
    if (this.poll.isDisposed) {
      return;
    }
    if (this.poll.state.phase === 'constructed' || this.poll.state.phase === 'stopped') {
      void this.poll.start();
    } else if (
      Date.now() - this.lastRefresh > 2000 ||
      this.status !== 'ok' ||
      this.stream.lastId === null
    ) {
      void this.poll.refresh();
    } else {
      this.stream.connect();
    }
  }

  // -- refresh ----------------------------------------------------------------------

  /** One full refresh; rejects (so the Poll backs off) while the server side is not usable. */
  private async tick(): Promise<void> {
    this.forced = false;
    if (!this.active) {
      return;
    }
    let health: Health;
    try {
      health = await this.client.health();
    } catch (error) {
      this.setStatus(statusOf(error), describe(error));
      throw error;
    }
    this.health = health;
    if (health.status === 'starting') {
      this.setStatus('loading', health.message ?? 'ScriptHut is starting');
      window.setTimeout(() => void this.poll.refresh(), 1000);
      return;
    }
    if (health.status === 'config_error' || health.status === 'error') {
      this.setStatus(health.status, health.message ?? '');
      this.stream.close();
      throw new Error(health.message ?? health.status);
    }
    const last = health.stream?.last_event_id;
    const resuming = this.stream.state !== 'open';
    if (
      resuming &&
      typeof last === 'number' &&
      (this.stream.lastId === null || last < this.stream.lastId)
    ) {
      // Resume right after what the lists below already contain: no gap, no duplicate.
      // (An id lower than ours: the server now reads another data directory; start over.)
      this.stream.lastId = last;
    }
    try {
      const backends =
        this.forceBackends ||
        !this.backends ||
        Date.now() - this.lastBackends >= BACKENDS_MIN_GAP_MS;
      this.forceBackends = false;
      await Promise.all([
        this.loadRuns(),
        this.loadJobs(!this.live),
        backends ? this.loadBackends() : Promise.resolve()
      ]);
    } catch (error) {
      this.setStatus(statusOf(error), describe(error));
      throw error;
    }
    this.lastRefresh = Date.now();
    this.setStatus('ok', health.status === 'ok' ? '' : (health.message ?? ''));
    this._refreshed.emit();
    if (this.active) {
      this.stream.connect();
    }
  }

  private async loadRuns(): Promise<void> {
    const page = await this.client.runs(this.settings.runsShown, 0);
    this.runs = page.runs;
    this.runsTotal = page.total;
    for (const run of page.runs) {
      this.runBackends.set(run.id, run.backend);
    }
  }

  private async loadJobs(complete: boolean): Promise<void> {
    const all = this.settings.allUsers;
    const answer = await this.client.jobs({ all });
    if (all !== this.settings.allUsers) {
      return; // the toggle changed meanwhile: the read it started replaces this one
    }
    this.lastJobs = Date.now();
    this.jobs.merge(answer.jobs, complete, {
      user_filter: answer.user_filter ?? null,
      default_user_filter: answer.default_user_filter ?? null
    });
    this.externalUnknown = answer.external_unknown ?? [];
  }

  /** Read the job list again now (the user filter toggle); else the next refresh does. */
  private reloadJobs(): void {
    this._changed.emit();
    if (!this.active || this.status !== 'ok') {
      return;
    }
    this.loadJobs(!this.live)
      .then(() => this._changed.emit())
      .catch(() => undefined); // the next refresh reports it
  }

  /** Backends that could not list the user's other jobs. */
  externalUnknown: string[] = [];

  private async loadBackends(): Promise<void> {
    this.lastBackends = Date.now();
    try {
      this.backends = await this.client.backends();
      this.backendsError = '';
    } catch (error) {
      if (error instanceof NetworkError) {
        throw error;
      }
      this.backendsError = describe(error);
    }
  }

  private setStatus(status: Status, message: string): void {
    this.status = status;
    this.message = message;
    this._changed.emit();
  }

  // -- events -----------------------------------------------------------------------

  private onEvent(event: ServerEvent): void {
    const run = event.run ? String(event.run) : '';
    if (event.kind === 'run_created' && run) {
      if (event.backend) {
        this.runBackends.set(run, String(event.backend));
      }
      if (!this.runs.some(r => r.id === run)) {
        this.runs = [
          {
            id: run,
            name: String(event.name ?? run),
            backend: String(event.backend ?? ''),
            state: String(event.state ?? 'pending'),
            created_at: Number(event.ts ?? Date.now() / 1000),
            counts: {},
            total: 0
          },
          ...this.runs
        ].slice(0, this.settings.runsShown);
        this.runsTotal += 1;
        void this.loadRun(run);
      }
    } else if (event.kind === 'run' && run) {
      const index = this.runs.findIndex(r => r.id === run);
      if (index >= 0) {
        const next = { ...this.runs[index] };
        for (const f of ['state', 'counts', 'total', 'started_at', 'ended_at', 'message']) {
          if (f in event) {
            next[f] = event[f];
          }
        }
        this.runs = [...this.runs.slice(0, index), next, ...this.runs.slice(index + 1)];
      }
    } else if (event.kind === 'config') {
      // Backends may have come or gone: read them (and health) again now.
      void this.refresh();
      this._configChanged.emit();
    } else if (event.kind === 'task' && run && !this.runBackends.has(run)) {
      void this.loadRun(run).then(() => this.jobs.apply(event));
    }
    this.jobs.apply(event);
    this._event.emit(event);
    if (event.kind === 'task' || event.kind === 'run_created') {
      this.activity();
    }
    this._changed.emit();
  }

  /** One run's record (a run created elsewhere, or one the list does not show). */
  private async loadRun(id: string): Promise<void> {
    if (this.loadingRuns.has(id)) {
      return;
    }
    this.loadingRuns.add(id);
    try {
      const record = await this.client.run(id, false);
      this.runBackends.set(record.id, record.backend);
      const index = this.runs.findIndex(r => r.id === record.id);
      if (index >= 0) {
        // Events that came meanwhile are newer than this record: keep what they said.
        const known = this.runs[index];
        const merged = Object.keys(known.counts ?? {}).length
          ? { ...record, state: known.state, counts: known.counts, total: known.total }
          : record;
        this.runs = [...this.runs.slice(0, index), merged, ...this.runs.slice(index + 1)];
        this._changed.emit();
      }
    } catch {
      // the next refresh has it
    } finally {
      this.loadingRuns.delete(id);
    }
  }

  /**
   * Jobs were submitted or ended: the queue (the user's other jobs, idle CPUs) changed
   * too. Re-read it once things are quiet, no more often than the minimum gaps.
   */
  private activity(): void {
    if (this.activityTimer) {
      return;
    }
    this.activityTimer = window.setTimeout(() => {
      this.activityTimer = 0;
      if (!this.active || !this.live) {
        return;
      }
      const now = Date.now();
      const reads: Promise<void>[] = [];
      if (now - this.lastJobs >= JOBS_MIN_GAP_MS) {
        reads.push(this.loadJobs(false));
      }
      if (now - this.lastBackends >= BACKENDS_MIN_GAP_MS) {
        reads.push(this.loadBackends());
      }
      void Promise.all(reads)
        .then(() => this._changed.emit())
        .catch(() => undefined);
    }, ACTIVITY_DELAY_MS);
  }

  // -- the stream ---------------------------------------------------------------------

  private onStreamState(state: StreamState): void {
    if (state === 'open') {
      this.streamOpenedAt = Date.now();
    }
    this._changed.emit();
  }

  private onStreamEnded(error: unknown): void {
    if (!this.active) {
      return;
    }
    if (error instanceof ApiError && error.status === 404) {
      this.setStatus('not_installed', describe(error));
    }
    // A connection that lived a while ended (server restart, slow client dropped):
    // refresh and reconnect at once. One that failed at once waits for the next tick
    // (the fallback interval, with backoff), so a broken stream is not hammered.
    if (Date.now() - this.streamOpenedAt > STREAM_HEALTHY_MS && this.streamOpenedAt) {
      this.streamOpenedAt = 0;
      void this.poll.refresh();
    }
  }
}

export function statusOf(error: unknown): Status {
  if (error instanceof NetworkError) {
    return 'offline';
  }
  if (error instanceof ApiError) {
    if (error.status === 404) {
      return 'not_installed';
    }
    if (error.status === 403 || error.status === 401) {
      return 'forbidden';
    }
    if (error.status >= 500 && error.status < 600 && !error.reason) {
      return 'offline'; // a proxy in front of a server that is not answering
    }
  }
  return 'error';
}
