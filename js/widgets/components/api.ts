// Reads and actions a view needs, behind one interface with two implementations:
// the kernel (custom widget messages; see ../widget.ts) and the REST API called from the
// browser (same origin), which keeps answering while the kernel is busy with a cell.
// `RestApi` falls back to the kernel when the API cannot be reached from the page.

import type { Row } from "./store";

export interface LogRead {
  text: string;
  offset: number;
  next_offset: number;
  size: number;
  final?: boolean;
  missing?: boolean;
  attempt?: number;
}

export interface LogOptions {
  error?: boolean;
  offset?: number;
  tail?: number;
}

export interface ScriptHutApi {
  readonly via: string; // "rest" or "kernel": how the last call was answered
  task(run: string, task: string): Promise<Row>;
  script(run: string, task: string): Promise<string>;
  env(run: string, task: string): Promise<Row>;
  log(run: string, task: string, options: LogOptions): Promise<LogRead>;
  outputs(run: string, task: string): Promise<Row>;
  summary(run: string): Promise<Row>;
  output(run: string, task: string, path: string, attempt?: number): Promise<Blob>;
  cancelJob(backend: string, jobId: string): Promise<Row>;
  cancelRun(run: string): Promise<Row>;
  rerunRun(run: string): Promise<Row>;
}

// The API answered with an error of its own (no such task, not allowed...).
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status = 0,
    readonly reason = "",
  ) {
    super(message);
  }
}

// The API could not be used from here (network, proxy, login): try the kernel instead.
class Unreachable extends Error {}

function cookie(name: string): string | undefined {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return undefined;
}

// The token JupyterLab / Notebook put in their page config, when they did.
function pageToken(): string | undefined {
  const node = document.getElementById("jupyter-config-data");
  if (!node?.textContent) return undefined;
  try {
    const token = JSON.parse(node.textContent).token;
    return typeof token === "string" && token ? token : undefined;
  } catch {
    return undefined;
  }
}

export class RestApi implements ScriptHutApi {
  via = "rest";
  private broken = false;

  constructor(
    readonly base: string, // e.g. "/user/alice/scripthut/api/"
    private readonly fallback: ScriptHutApi,
  ) {}

  private url(path: string, query: Record<string, unknown> = {}): string {
    const base = this.base.endsWith("/") ? this.base : this.base + "/";
    const url = new URL(base + path, window.location.origin);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  private async call(method: string, path: string, query?: Record<string, unknown>): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json" };
    const token = pageToken();
    if (token) headers.Authorization = `token ${token}`;
    const xsrf = cookie("_xsrf");
    if (xsrf && method !== "GET") headers["X-XSRFToken"] = xsrf;
    let response: Response;
    try {
      response = await fetch(this.url(path, query), {
        method,
        headers,
        credentials: "same-origin",
        body: method === "GET" ? undefined : "{}",
      });
    } catch (error) {
      throw new Unreachable(String(error));
    }
    const type = response.headers.get("Content-Type") ?? "";
    if (response.ok) return response;
    if (type.includes("json")) {
      const body = await response.json().catch(() => ({}));
      // jupyter_server's own 403 (login or XSRF) says nothing of ScriptHut: use the kernel.
      if (response.status === 403 && !body.reason) throw new Unreachable("forbidden");
      throw new ApiError(body.message ?? response.statusText, response.status, body.reason ?? "");
    }
    throw new Unreachable(`${response.status} ${response.statusText}`);
  }

  private async either<T>(rest: () => Promise<T>, kernel: () => Promise<T>): Promise<T> {
    if (!this.broken) {
      try {
        const value = await rest();
        this.via = "rest";
        return value;
      } catch (error) {
        if (!(error instanceof Unreachable)) throw error;
        this.broken = true; // stop trying: the kernel answers from now on
      }
    }
    const value = await kernel();
    this.via = "kernel";
    return value;
  }

  private json(method: string, path: string, query?: Record<string, unknown>): Promise<Row> {
    return this.call(method, path, query).then((r) => r.json());
  }

  task(run: string, task: string): Promise<Row> {
    const path = `runs/${enc(run)}/tasks/${enc(task)}`;
    return this.either(() => this.json("GET", path), () => this.fallback.task(run, task));
  }

  script(run: string, task: string): Promise<string> {
    const path = `runs/${enc(run)}/tasks/${enc(task)}/script`;
    return this.either(
      () => this.call("GET", path).then((r) => r.text()),
      () => this.fallback.script(run, task),
    );
  }

  env(run: string, task: string): Promise<Row> {
    const path = `runs/${enc(run)}/tasks/${enc(task)}/env`;
    return this.either(() => this.json("GET", path), () => this.fallback.env(run, task));
  }

  log(run: string, task: string, options: LogOptions): Promise<LogRead> {
    const stream = options.error ? "error" : "output";
    const path = `runs/${enc(run)}/tasks/${enc(task)}/logs/${stream}`;
    const query = { offset: options.offset, tail: options.tail };
    return this.either(
      () => this.json("GET", path, query) as Promise<LogRead>,
      () => this.fallback.log(run, task, options),
    );
  }

  outputs(run: string, task: string): Promise<Row> {
    const path = `runs/${enc(run)}/tasks/${enc(task)}/outputs`;
    return this.either(() => this.json("GET", path), () => this.fallback.outputs(run, task));
  }

  summary(run: string): Promise<Row> {
    const path = `runs/${enc(run)}/summary`;
    return this.either(() => this.json("GET", path), () => this.fallback.summary(run));
  }

  output(run: string, task: string, file: string, attempt?: number): Promise<Blob> {
    const path = `runs/${enc(run)}/tasks/${enc(task)}/outputs/file`;
    return this.either(
      () => this.call("GET", path, { path: file, attempt }).then((r) => r.blob()),
      () => this.fallback.output(run, task, file, attempt),
    );
  }

  cancelJob(backend: string, jobId: string): Promise<Row> {
    const path = `jobs/${enc(backend)}/${enc(jobId)}/cancel`;
    return this.either(() => this.json("POST", path), () => this.fallback.cancelJob(backend, jobId));
  }

  cancelRun(run: string): Promise<Row> {
    const path = `runs/${enc(run)}/cancel`;
    return this.either(() => this.json("POST", path), () => this.fallback.cancelRun(run));
  }

  rerunRun(run: string): Promise<Row> {
    const path = `runs/${enc(run)}/rerun`;
    return this.either(() => this.json("POST", path), () => this.fallback.rerunRun(run));
  }
}

function enc(part: string): string {
  return encodeURIComponent(part);
}

// Requests over any request/reply channel (the widget's custom messages).
export type Requester = (op: string, args: Row) => Promise<any>;

export class ChannelApi implements ScriptHutApi {
  readonly via = "kernel";
  constructor(private readonly request: Requester) {}

  task(run: string, task: string): Promise<Row> {
    return this.request("task", { run, task });
  }
  script(run: string, task: string): Promise<string> {
    return this.request("script", { run, task });
  }
  env(run: string, task: string): Promise<Row> {
    return this.request("env", { run, task });
  }
  log(run: string, task: string, options: LogOptions): Promise<LogRead> {
    return this.request("log", { run, task, ...options });
  }
  outputs(run: string, task: string): Promise<Row> {
    return this.request("outputs", { run, task });
  }
  summary(run: string): Promise<Row> {
    return this.request("summary", { run });
  }
  async output(run: string, task: string, path: string, attempt?: number): Promise<Blob> {
    const reply = await this.request("output", { run, task, path, attempt });
    const bytes = Uint8Array.from(atob(String(reply.base64)), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type: String(reply.type) });
  }
  cancelJob(backend: string, jobId: string): Promise<Row> {
    return this.request("cancel_job", { backend, job_id: jobId });
  }
  cancelRun(run: string): Promise<Row> {
    return this.request("cancel_run", { run });
  }
  rerunRun(run: string): Promise<Row> {
    return this.request("rerun_run", { run });
  }
}
