// The server's event stream (Server-Sent Events), read with fetch rather than EventSource.
//
// Why fetch: EventSource cannot send headers. Under JupyterLab the page may be
// authenticated by a token (ServerConnection sends `Authorization: token ...`), not by a
// cookie, and an EventSource request would then get 403. ServerConnection.makeRequest
// sends exactly what every other request of the page sends, and `Last-Event-ID` on
// resumption. The body is parsed as the SSE spec says (id/data/comment lines, blank line
// ends a message).

import { ISignal, Signal } from '@lumino/signaling';

import type { Row } from '../../widgets/components/store';
import { ScriptHutClient, errorOf } from './api';

export interface ServerEvent extends Row {
  id: number;
  ts: number;
  kind: string;
  run: string | null;
  task: string | null;
}

export type StreamState = 'closed' | 'connecting' | 'open';

/** One SSE message: its id (if any) and its data lines joined. */
export interface SseMessage {
  id: string | null;
  data: string;
}

/** Incremental SSE parser: feed text chunks, get whole messages. */
export class SseParser {
  private buffer = '';
  private id: string | null = null;
  private data: string[] = [];

  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const out: SseMessage[] = [];
    let index: number;
    while ((index = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, index);
      const skip = this.buffer.startsWith('\r\n', index) ? 2 : 1;
      this.buffer = this.buffer.slice(index + skip);
      const message = this.line(line);
      if (message) {
        out.push(message);
      }
    }
    return out;
  }

  private line(line: string): SseMessage | null {
    if (line === '') {
      if (!this.data.length) {
        return null;
      }
      const message = { id: this.id, data: this.data.join('\n') };
      this.data = [];
      return message;
    }
    if (line.startsWith(':')) {
      return null; // a comment: keepalive, connected, dropped
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) {
      value = value.slice(1);
    }
    if (field === 'data') {
      this.data.push(value);
    } else if (field === 'id') {
      this.id = value;
    }
    return null;
  }
}

/**
 * One connection at a time to `GET events`, resuming after the last event id seen.
 * It does not reconnect by itself: its owner decides when (and whether) to try again.
 */
export class EventStream {
  /** The last event id seen; null until known (the stream then starts at the present). */
  lastId: number | null = null;
  private controller: AbortController | null = null;
  private _state: StreamState = 'closed';
  private readonly _event = new Signal<this, ServerEvent>(this);
  private readonly _stateChanged = new Signal<this, StreamState>(this);
  private readonly _failed = new Signal<this, unknown>(this);

  constructor(private readonly client: ScriptHutClient) {}

  get state(): StreamState {
    return this._state;
  }

  get event(): ISignal<this, ServerEvent> {
    return this._event;
  }

  get stateChanged(): ISignal<this, StreamState> {
    return this._stateChanged;
  }

  /** Why the last connection ended (null when it ended cleanly or was closed by us). */
  get failed(): ISignal<this, unknown> {
    return this._failed;
  }

  /** Connect (no-op when already connecting or open). */
  connect(): void {
    if (this.controller) {
      return;
    }
    const controller = (this.controller = new AbortController());
    this.setState('connecting');
    void this.read(controller).then(
      () => this.ended(controller, null),
      error => this.ended(controller, error)
    );
  }

  /** Close the connection (the next `connect` resumes after `lastId`). */
  close(): void {
    const controller = this.controller;
    this.controller = null;
    controller?.abort();
    this.setState('closed');
  }

  private ended(controller: AbortController, error: unknown): void {
    if (this.controller !== controller) {
      return; // closed by us, or replaced
    }
    this.controller = null;
    this.setState('closed');
    this._failed.emit(error);
  }

  private async read(controller: AbortController): Promise<void> {
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this.lastId !== null) {
      headers['Last-Event-ID'] = String(this.lastId);
    }
    const response = await this.client.request('events', {
      method: 'GET',
      headers,
      signal: controller.signal
    });
    if (!response.ok) {
      throw await errorOf(response);
    }
    if (!response.body) {
      throw new Error('the event stream has no body');
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.controller !== controller) {
          return;
        }
        // The first bytes (`retry:` and `: connected`) come at once: the stream is up.
        this.setState('open');
        for (const message of parser.push(decoder.decode(value, { stream: true }))) {
          this.dispatch(message);
        }
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  }

  private dispatch(message: SseMessage): void {
    let event: ServerEvent;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const id = Number(message.id ?? event.id);
    if (Number.isFinite(id) && id > 0) {
      if (this.lastId !== null && id <= this.lastId) {
        return; // already seen (a replay overlapping what we had)
      }
      this.lastId = id;
    }
    this._event.emit(event);
  }

  private setState(state: StreamState): void {
    if (this._state !== state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }
}
