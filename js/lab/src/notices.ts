// Notifications in JupyterLab: a run that completes or fails and a task that fails show in
// the Lab notification centre, for runs started anywhere (CLI, notebook, panel, another
// tab); once per event even with several tabs open; optionally as browser desktop
// notifications; and the tab title shows the progress of the runs in flight.
//
// Once across tabs: every tab of the page's origin shares localStorage, and the check and
// mark of an event id happen under one Web Lock (`navigator.locks`), so two tabs receiving
// the same event cannot both decide to show it. Only events newer than the page's start are
// shown: the model's stream starts at the present, and replays after a reconnect carry ids
// the lock-protected mark has already seen when another tab showed them.

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

/** Run `body` holding the cross-tab lock (or directly where Web Locks are missing). */
async function exclusively<T>(body: () => T): Promise<T> {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) {
    return body();
  }
  return locks.request(LOCK, async () => body());
}

/** Whether this tab is the first to claim event `id` (and mark it claimed for the others). */
export async function claim(scope: string, id: number): Promise<boolean> {
  const key = `${MARK_KEY}:${scope}`;
  return exclusively(() => {
    const seen = Number(window.localStorage.getItem(key) ?? '0');
    if (Number.isFinite(seen) && id <= seen) {
      return false;
    }
    window.localStorage.setItem(key, String(id));
    return true;
  });
}

export class RunNotices {
  private options: NoticeOptions = { desktopNotifications: false, titleProgress: true };
  private baseTitle = document.title;
  private prefix = '';
  private readonly observer: MutationObserver;

  /** `scope`: the server's base URL (event ids are per server's data directory). */
  constructor(
    private readonly model: ScriptHutModel,
    private readonly scope: string
  ) {
    model.event.connect((_, event) => void this.onEvent(event));
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
    this.observer.disconnect();
    this.prefix = '';
    this.keepPrefix();
  }

  private async onEvent(event: ServerEvent): Promise<void> {
    const notice = noticeOf(event, id => this.runName(id));
    if (!notice || !(await claim(this.scope, Number(event.id)))) {
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
