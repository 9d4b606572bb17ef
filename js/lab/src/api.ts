// The ScriptHut REST API as the panel calls it: every request goes through JupyterLab's
// ServerConnection, so the base URL (JupyterHub's /user/<name>/ included), the token or
// login cookie and the XSRF header are those of the page.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { LogOptions, LogRead, ScriptHutApi } from '../../widgets/components/api';
import type { Row } from '../../widgets/components/store';

export const API_PATH = 'scripthut/api';

export interface Issue {
  where: string;
  field?: string | null;
  message: string;
  /** The file the problem is in (configuration problems) and its line. */
  file?: string;
  line?: number | null;
}

export interface ConfigFile {
  layer: 'global' | 'project' | string;
  path: string;
  exists: boolean;
}

export interface ConfigEntry {
  key: string;
  value: unknown;
  /** The file and line the key came from (null: a default). */
  file: string | null;
  line: number | null;
}

/** GET config (and, without `entries`, `health.config` and POST config/reload). */
export interface ConfigState {
  status: 'ok' | 'error';
  message?: string | null;
  files: ConfigFile[];
  errors: Issue[];
  loaded_at?: number | null;
  reloads?: number;
  changes?: Record<string, unknown> | null;
  notices?: string[];
  entries?: ConfigEntry[];
  /** Absolute file path -> the path Lab opens it by (files inside the server's root). */
  lab_paths?: Record<string, string>;
}

export interface Health {
  status: 'ok' | 'starting' | 'config_error' | 'error' | 'stopped';
  mode: string;
  version?: string;
  config_file?: string | null;
  data_dir?: string | null;
  message?: string;
  errors?: Issue[];
  lease?: Row | null;
  stream?: { clients?: number; dropped?: number; last_event_id?: number };
  config?: ConfigState;
}

export interface BackendInfo {
  kind?: string;
  reachable?: boolean;
  cpus_idle?: number | null;
  cpus_total?: number | null;
  queue_depth?: number | null;
  partitions?: Row[];
}

export interface Backend {
  name: string;
  type: string;
  transport?: string | null;
  max_concurrent?: number;
  available?: boolean;
  status: 'ok' | 'unreachable' | 'unavailable' | 'error' | string;
  message?: string | null;
  active_jobs?: number | null;
  info?: BackendInfo | null;
}

export interface Backends {
  default?: string;
  backends: Backend[];
}

export interface Job extends Row {
  backend: string;
  job_id: string;
  state: string;
  source: 'scripthut' | 'external';
  run?: string | null;
  task?: string | null;
  name?: string | null;
}

export interface Jobs {
  jobs: Job[];
  external_unknown?: string[];
  /** Whose other jobs are listed (null: every user's). */
  user_filter?: string | null;
  /** settings.filter_user of scripthut.yaml (null: not set). */
  default_user_filter?: string | null;
}

export interface Run extends Row {
  id: string;
  name: string;
  backend: string;
  state: string;
  created_at: number;
  started_at?: number | null;
  ended_at?: number | null;
  cancel_requested?: boolean;
  message?: string | null;
  counts: Record<string, number>;
  total: number;
  tasks?: Row[];
}

/** `GET runs/{id}/cost`: the run's estimated cost (scripthut.cost). */
export interface RunCost extends Row {
  run: string;
  priced: boolean;
  total: number;
  costed: number;
  tasks: number;
  source: string;
  summary: string;
  items?: Row[];
}

export interface Runs {
  runs: Run[];
  total: number;
  limit: number;
  offset: number;
}

/** An answer of the API (or of the server in front of it) that is not a success. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string = '',
    readonly errors: Issue[] = []
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** Every problem, one per line (400 replies list all of them). */
  get details(): string {
    const lines = this.errors.map(e => `${e.where}${e.field ? ` (${e.field})` : ''}: ${e.message}`);
    return [this.message, ...lines].join('\n');
  }
}

/** The request never got an answer: the Jupyter server is down or unreachable. */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetworkError';
  }
}

type Query = Record<string, string | number | boolean | null | undefined>;

export interface WorkflowFileInfo {
  path: string;
  title?: string | null;
  tasks?: number | null;
  valid: boolean;
  issues: string[];
}

export interface SyncState {
  source: string;
  backend: string;
  branch?: string | null;
  sha?: string | null;
  root?: string | null;
  synced_at?: number | null;
  attempted_at?: number | null;
  error?: string | null;
  files: WorkflowFileInfo[];
}

export interface Source {
  name: string;
  type: 'git' | 'path' | string;
  backend: string;
  url?: string | null;
  branch?: string | null;
  path?: string | null;
  description?: string;
  syncs: SyncState[];
}

export interface SourceChoice {
  file?: string;
  branch?: string;
  backend?: string;
}

export interface DryRun {
  source: string;
  file: string;
  tasks: number;
  edges: number;
  /** Each task's dependencies with patterns (`sim.*`) expanded, as the run would have them. */
  deps: Record<string, string[]>;
  document: { tasks?: Row[] } & Row;
  provenance?: Row | null;
}

function seg(part: string): string {
  return encodeURIComponent(part);
}

export class ScriptHutClient implements ScriptHutApi {
  readonly via = 'rest';
  readonly serverSettings: ServerConnection.ISettings;

  constructor(settings?: ServerConnection.ISettings) {
    this.serverSettings = settings ?? ServerConnection.makeSettings();
  }

  /** The absolute URL of an API path, under the server's base URL. */
  url(path: string, query: Query = {}): string {
    const base = URLExt.join(this.serverSettings.baseUrl, API_PATH, path);
    const params = Object.entries(query)
      .filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
    return params.length ? `${base}?${params.join('&')}` : base;
  }

  /** A raw request (the event stream reads the body itself). */
  async request(path: string, init: RequestInit = {}, query: Query = {}): Promise<Response> {
    try {
      return await ServerConnection.makeRequest(this.url(path, query), init, this.serverSettings);
    } catch (error) {
      if ((error as Error)?.name === 'AbortError') {
        throw error;
      }
      throw new NetworkError(String((error as Error)?.message ?? error));
    }
  }

  private async call<T>(
    method: string,
    path: string,
    query: Query = {},
    body?: unknown,
    as: 'json' | 'text' = 'json'
  ): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    const response = await this.request(path, init, query);
    if (!response.ok) {
      throw await errorOf(response);
    }
    if (response.status === 204) {
      return undefined as T;
    }
    return (as === 'json' ? response.json() : response.text()) as Promise<T>;
  }

  health(): Promise<Health> {
    return this.call('GET', 'health');
  }

  backends(): Promise<Backends> {
    return this.call('GET', 'backends');
  }

  /** `all`: every user's other jobs, not only settings.filter_user's. */
  jobs(
    filters: { backend?: string; state?: string; run?: string; all?: boolean } = {}
  ): Promise<Jobs> {
    const { all, ...rest } = filters;
    return this.call('GET', 'jobs', { ...rest, all: all ? 'true' : undefined });
  }

  runs(limit = 50, offset = 0): Promise<Runs> {
    return this.call('GET', 'runs', { limit, offset });
  }

  run(id: string, tasks = true): Promise<Run> {
    return this.call('GET', `runs/${seg(id)}`, { tasks: tasks ? 1 : 0 });
  }

  /** The run's estimated cost; `items` adds each task's. */
  cost(id: string, items = false): Promise<RunCost> {
    return this.call('GET', `runs/${seg(id)}/cost`, { items: items ? 1 : 0 });
  }

  /** Start a run of a workflow file (a path relative to the server's root directory). */
  submitFile(path: string, backend?: string): Promise<Run> {
    const body: Row = { path };
    if (backend) {
      body.backend = backend;
    }
    return this.call('POST', 'runs', {}, body);
  }

  sources(): Promise<{ sources: Source[] }> {
    return this.call('GET', 'sources');
  }

  /** Sync a source now (joins a sync under way); the reply carries its error, if any. */
  syncSource(name: string, choice: SourceChoice = {}): Promise<{ sources: SyncState[] }> {
    return this.call('POST', `sources/${seg(name)}/sync`, {}, choice);
  }

  /** A source's workflow file validated, with its tasks; nothing is started. */
  dryRunSource(name: string, choice: SourceChoice): Promise<DryRun> {
    return this.call('POST', `sources/${seg(name)}/dry-run`, {}, choice);
  }

  runSource(name: string, choice: SourceChoice): Promise<Run> {
    return this.call('POST', `sources/${seg(name)}/run`, {}, choice);
  }

  /** The configuration files in use, their problems, the merged result with provenance. */
  config(): Promise<ConfigState> {
    return this.call('GET', 'config');
  }

  /** Read the configuration files again now (the server also does when they change). */
  reloadConfig(): Promise<ConfigState> {
    return this.call('POST', 'config/reload', {}, {});
  }

  /** Start a run of a task document (relative working dirs start at the server's root). */
  submitDocument(workflow: Row, backend?: string): Promise<Run> {
    const body: Row = { workflow };
    if (backend) {
      body.backend = backend;
    }
    return this.call('POST', 'runs', {}, body);
  }

  deleteRun(id: string): Promise<void> {
    return this.call('DELETE', `runs/${seg(id)}`);
  }

  // -- ScriptHutApi: what the shared components call -----------------------------------

  task(run: string, task: string): Promise<Row> {
    return this.call('GET', `runs/${seg(run)}/tasks/${seg(task)}`);
  }

  script(run: string, task: string): Promise<string> {
    return this.call('GET', `runs/${seg(run)}/tasks/${seg(task)}/script`, {}, undefined, 'text');
  }

  env(run: string, task: string): Promise<Row> {
    return this.call('GET', `runs/${seg(run)}/tasks/${seg(task)}/env`);
  }

  log(run: string, task: string, options: LogOptions = {}): Promise<LogRead> {
    const stream = options.error ? 'error' : 'output';
    const query: Query = { offset: options.offset, tail: options.tail };
    const attempt = (options as Row).attempt;
    if (attempt) {
      query.attempt = attempt;
    }
    return this.call('GET', `runs/${seg(run)}/tasks/${seg(task)}/logs/${stream}`, query);
  }

  outputs(run: string, task: string): Promise<Row> {
    return this.call('GET', `runs/${seg(run)}/tasks/${seg(task)}/outputs`);
  }

  summary(run: string): Promise<Row> {
    return this.call('GET', `runs/${seg(run)}/summary`);
  }

  async output(run: string, task: string, path: string, attempt?: number): Promise<Blob> {
    const where = `runs/${seg(run)}/tasks/${seg(task)}/outputs/file`;
    const response = await this.request(where, { method: 'GET' }, { path, attempt });
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response.blob();
  }

  cancelJob(backend: string, jobId: string): Promise<Row> {
    return this.call('POST', `jobs/${seg(backend)}/${seg(jobId)}/cancel`, {}, {});
  }

  cancelRun(run: string): Promise<Row> {
    return this.call('POST', `runs/${seg(run)}/cancel`, {}, {});
  }

  rerunRun(run: string): Promise<Row> {
    return this.call('POST', `runs/${seg(run)}/rerun`, {}, {});
  }

  /** Ask the engine for the run's notifications (email, webhooks of scripthut.yaml). */
  notifyRun(run: string): Promise<Row> {
    return this.call('POST', `runs/${seg(run)}/notify`, {}, {});
  }
}

/** The API's JSON error, or a plain one for what answered in its place (a proxy, a 404). */
export async function errorOf(response: Response): Promise<ApiError> {
  let body: Row = {};
  const type = response.headers.get('Content-Type') ?? '';
  if (type.includes('json')) {
    body = await response.json().catch(() => ({}));
  }
  const message =
    typeof body.message === 'string' && body.message
      ? body.message
      : `${response.status} ${response.statusText || 'error'}`;
  return new ApiError(
    message,
    response.status,
    typeof body.reason === 'string' ? body.reason : '',
    Array.isArray(body.errors) ? (body.errors as Issue[]) : []
  );
}

/** Short, human text for any error a call may raise. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) {
    return error.details;
  }
  if (error instanceof NetworkError) {
    return `cannot reach the Jupyter server (${error.message})`;
  }
  return String((error as Error)?.message ?? error);
}
