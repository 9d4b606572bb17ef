// Executed notebooks (and other outputs) of tasks, opened read-only in JupyterLab: a contents
// drive named `ScriptHutOutputs` whose paths are `<run>/<task>/<attempt>/<output path>`, read
// through the REST API (only recorded outputs), never written.

import type { Contents, ServerConnection } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';

import type { ScriptHutClient } from './api';

export const OUTPUTS_DRIVE = 'ScriptHutOutputs';

/** The drive path of one output, for `docmanager:open`. */
export function outputPath(run: string, task: string, attempt: number, path: string): string {
  return `${OUTPUTS_DRIVE}:${run}/${task}/${attempt}/${path}`;
}

function readOnly(): Promise<never> {
  return Promise.reject(new Error('task outputs are read-only'));
}

export class OutputsDrive implements Contents.IDrive {
  readonly name = OUTPUTS_DRIVE;
  readonly fileChanged: Signal<Contents.IDrive, Contents.IChangedArgs> = new Signal<
    Contents.IDrive,
    Contents.IChangedArgs
  >(this);
  private disposed = false;

  constructor(private readonly client: ScriptHutClient) {}

  get serverSettings(): ServerConnection.ISettings {
    return this.client.serverSettings;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    this.disposed = true;
    Signal.clearData(this);
  }

  async get(localPath: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    const [run, task, attempt, ...rest] = localPath.split('/');
    const path = rest.join('/');
    const name = rest[rest.length - 1] ?? localPath;
    const isNotebook = path.endsWith('.ipynb');
    let content: unknown = null;
    if (options?.content !== false) {
      const blob = await this.client.output(run, task, path, Number(attempt) || undefined);
      const text = await blob.text();
      content = isNotebook ? JSON.parse(text) : text;
    }
    const now = new Date().toISOString();
    return {
      name,
      path: localPath,
      type: isNotebook ? 'notebook' : 'file',
      format: isNotebook ? 'json' : 'text',
      mimetype: isNotebook ? 'application/x-ipynb+json' : 'text/plain',
      content,
      writable: false,
      created: now,
      last_modified: now,
      size: undefined
    };
  }

  getDownloadUrl(localPath: string): Promise<string> {
    const [run, task, attempt, ...rest] = localPath.split('/');
    return Promise.resolve(
      this.client.url(`runs/${run}/tasks/${task}/outputs/file`, { path: rest.join('/'), attempt })
    );
  }

  newUntitled(): Promise<Contents.IModel> {
    return readOnly();
  }
  delete(): Promise<void> {
    return readOnly();
  }
  rename(): Promise<Contents.IModel> {
    return readOnly();
  }
  save(): Promise<Contents.IModel> {
    return readOnly();
  }
  copy(): Promise<Contents.IModel> {
    return readOnly();
  }
  createCheckpoint(): Promise<Contents.ICheckpointModel> {
    return readOnly();
  }
  listCheckpoints(): Promise<Contents.ICheckpointModel[]> {
    return Promise.resolve([]);
  }
  restoreCheckpoint(): Promise<void> {
    return readOnly();
  }
  deleteCheckpoint(): Promise<void> {
    return readOnly();
  }
}
