// Notifications in JupyterLab: a run that completes or fails and a task that fails show in
// the Lab notification centre, for runs started anywhere (CLI, notebook, panel, another
// tab); once per event even with several tabs open; optionally as browser desktop
// notifications; and the tab title shows the progress of the runs in flight.
//
// Once across tabs: the tabs of one server elect a teller with a Web Lock (`navigator.locks`)
// that the teller holds for its lifetime; the other tabs queue for it and the next one takes
// over when the teller closes. Only the teller shows notices, so two tabs receiving the same
// event can never both show it (a check-and-mark in localStorage under a lock would not do:
// Chromium copies localStorage into each renderer process and a tab in another process may
// read the mark before another tab's write reaches it). The teller records the last event id
// it showed in localStorage, so a new teller does not repeat what the old one showed when its
// stream replays after a reconnect. Only events newer than the page's start are shown: the
// model's stream starts at the present. Where Web Locks are missing (a page served over plain
// http from another host is not a secure context) every tab tells, guarded by the mark alone.

import { Notification } from '@jupyterlab/apputils';

import type { ServerEvent } from './events';
import type { ScriptHutModel } from './model';

export interface NoticeOptions {
  desktopNotifications: boolean;
  titleProgress: boolean;
}

const MARK_KEY = 'scripthut:notified-up-to';
const LOCK = 'scripthut-notices';
const ACTIVE = new Set(['pending', 'running']);

/** What an event is worth telling, if anything: [kind, message]. */
export function noticeOf(
  event: ServerEvent,
  runName: (id: string) => string
): ['success' | 'error', string] | null {
  const run = event.run ? String(event.run) : '';
  if (!run) {
    return null;
  }
  if (event.kind === 'run' && event.state === 'completed') {
    return ['success', `Run ${runName(run)} completed`];
  }
  if (event.kind === 'run' && event.state === 'failed') {
    return ['error', `Run ${runName(run)} failed`];
  }
  if (event.kind === 'task' && event.state === 'failed') {
    const reason = event.reason ? `: ${String(event.reason)}` : '';
    return ['error', `Task ${String(event.task)} of run ${runName(run)} failed${reason}`];
  }
  return null;
}

/** The last event id shown for `scope` (0 when none). */
function shownUpTo(scope: string): number {
  const seen = Number(window.localStorage.getItem(`${MARK_KEY}:${scope}`) ?? '0');
  return Number.isFinite(seen) ? seen : 0;
}

/** Decides which tab shows a notice: the one holding the scope's teller lock. */
export class Teller {
  private leading: boolean;
  private release: () => void = () => undefined;

  constructor(private readonly scope: string) {
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    this.leading = !locks;
    if (locks) {
      void locks.request(`${LOCK}:${scope}`, () => {
        this.leading = true;
        return new Promise<void>(resolve => (this.release = resolve));
      });
    }
  }

  /** Whether this tab shows event `id` (marking it shown). */
  claim(id: number): boolean {
    if (!this.leading || id <= shownUpTo(this.scope)) {
      return false;
    }
    window.localStorage.setItem(`${MARK_KEY}:${this.scope}`, String(id));
    return true;
  }

  /** Hand the lock to the next tab in line. */
  dispose(): void {
    this.leading = false;
    this.release();
  }
}

export class RunNotices {
  private options: NoticeOptions = { desktopNotifications: false, titleProgress: true };
  private baseTitle = document.title;
  private prefix = '';
  private readonly observer: MutationObserver;

  private readonly teller: Teller;

  /** `scope`: the server's base URL (event ids are per server's data directory). */
  constructor(
    private readonly model: ScriptHutModel,
    scope: string
  ) {
    this.teller = new Teller(scope);
    model.event.connect((_, event) => this.onEvent(event));
    model.changed.connect(() => this.updateTitle());
    // JupyterLab sets document.title itself (the current tab's name): keep the prefix on it.
    this.observer = new MutationObserver(() => this.keepPrefix());
    const title = document.querySelector('title');
    if (title) {
      this.observer.observe(title, { childList: true, characterData: true, subtree: true });
    }
  }

  configure(options: NoticeOptions): void {
    const asked = options.desktopNotifications && !this.options.desktopNotifications;
    this.options = options;
    if (asked && 'Notification' in window && window.Notification.permission === 'default') {
      void window.Notification.requestPermission();
    }
    this.updateTitle();
  }

  dispose(): void {
    this.teller.dispose();
    this.observer.disconnect();
    this.prefix = '';
    this.keepPrefix();
  }

  private onEvent(event: ServerEvent): void {
    const notice = noticeOf(event, id => this.runName(id));
    if (!notice || !this.teller.claim(Number(event.id))) {
      return;
    }
    const [kind, message] = notice;
    const actions = [{ label: 'Open', callback: () => this.openRun(String(event.run)) }];
    if (kind === 'success') {
      Notification.success(message, { autoClose: 8000, actions });
    } else {
      Notification.error(message, { autoClose: false, actions });
    }
    this.desktop(message);
  }

  /** Set by the plugin: open a run's view. */
  openRun: (id: string) => void = () => undefined;

  private desktop(message: string): void {
    if (
      this.options.desktopNotifications &&
      'Notification' in window &&
      window.Notification.permission === 'granted'
    ) {
      new window.Notification('ScriptHut', { body: message, tag: message });
    }
  }

  private runName(id: string): string {
    const run = this.model.runs.find(r => r.id === id);
    return run && run.name && run.name !== id ? `${run.name} (${id})` : id;
  }

  private updateTitle(): void {
    let done = 0;
    let total = 0;
    for (const run of this.model.runs) {
      if (ACTIVE.has(run.state)) {
        const counts = run.counts ?? {};
        done += (counts.completed ?? 0) + (counts.failed ?? 0) + (counts.dep_failed ?? 0);
        done += counts.cancelled ?? 0;
        total += run.total ?? 0;
      }
    }
    this.prefix = this.options.titleProgress && total ? `[${done}/${total}] ` : '';
    this.keepPrefix();
  }

  private keepPrefix(): void {
    const current = document.title.replace(/^\[\d+\/\d+\] /, '');
    this.baseTitle = current;
    const wanted = this.prefix + this.baseTitle;
    if (document.title !== wanted) {
      document.title = wanted;
    }
  }
}
