// Main-area views: one run (the shared RunView: header with actions, progress, DAG, task
// drawer with logs; and the shared Timeline), and the full job table (the shared
// JobTable). The same components the notebook widgets mount, fed by the lab's feeds.

import { createJobTable, JobTableView } from '../../widgets/components/jobtable';
import { createRunView, RunViewHandle } from '../../widgets/components/runview';
import { DataStore } from '../../widgets/components/store';
import { createTimeline, TimelineView } from '../../widgets/components/timeline';
import { h } from '../../widgets/components/format';
import { describe, type RunCost } from './api';
import type { ServerEvent } from './events';
import { RunFeed, TimelineFeed } from './feeds';
import { ModelView } from './modelview';
import type { ScriptHutModel } from './model';

const COST_REFRESH_MS = 5_000;

export class RunPanel extends ModelView {
  private readonly runFeed: RunFeed;
  private readonly timelineFeed: TimelineFeed;
  private readonly view: RunViewHandle;
  private readonly timeline: TimelineView;
  private readonly note = h('div', { class: 'jp-ScriptHut-note', hidden: true });
  private readonly cost = h('div', { class: 'jp-ScriptHut-cost', hidden: true });
  private costTimer: ReturnType<typeof setTimeout> | null = null;
  private costTook = 0; // ms the last cost read took: a large run's is read less often
  private queued: ServerEvent[] | null = null;
  private loading: Promise<void> | null = null;

  constructor(
    model: ScriptHutModel,
    runId: string,
    private selected = '',
    openOutput?: (run: string, task: string, attempt: number, path: string) => void
  ) {
    super(model);
    this.addClass('jp-ScriptHut-runpanel');
    this.runFeed = new RunFeed(new DataStore(), runId);
    this.timelineFeed = new TimelineFeed(new DataStore(), runId);
    const runEl = h('div', { class: 'jp-ScriptHut-runview' });
    const timelineEl = h('div', { class: 'jp-ScriptHut-timeline' });
    const root = h(
      'div',
      { class: 'sh-root' },
      this.note,
      this.cost,
      runEl,
      h('h3', { class: 'jp-ScriptHut-heading' }, 'Timeline'),
      timelineEl
    );
    this.node.append(root);
    this.view = createRunView(runEl, this.runFeed.store, {
      api: model.client,
      openOutput,
      selected: selected || undefined,
      onSelect: task => {
        this.selected = task;
      }
    });
    this.timeline = createTimeline(timelineEl, this.timelineFeed.store, {
      onBarClick: bar => this.view.select(String(bar.task))
    });
    model.event.connect(this.onEvent, this);
    model.refreshed.connect(this.reload, this);
    this.title.label = `Run ${runId}`;
    this.title.caption = `ScriptHut run ${runId}`;
    void this.reload();
  }

  get runId(): string {
    return this.runFeed.runId;
  }

  get selectedTask(): string {
    return this.selected;
  }

  /** Read the run again (a snapshot); events that come meanwhile are applied after it. */
  reload(): Promise<void> {
    if (this.loading) {
      return this.loading;
    }
    this.queued = [];
    const client = this.model.client;
    this.loading = Promise.all([this.runFeed.load(client), this.timelineFeed.load(client)])
      .then(() => {
        this.timelineFeed.runId = this.runFeed.runId;
        const name = this.runFeed.store.meta.name;
        this.title.label = name && name !== this.runId ? `${name}` : `Run ${this.runId}`;
        this.title.caption = `ScriptHut run ${this.runId}${name ? ` (${name})` : ''}`;
        this.id = `scripthut-run-${this.runId}`;
        this.showNote('');
        void this.readCost();
        if (this.selected && !this.isDisposed) {
          this.view.select(this.selected);
        }
      })
      .catch(error => this.showNote(`Cannot load run ${this.runId}: ${describe(error)}`))
      .finally(() => {
        const queued = this.queued ?? [];
        this.queued = null;
        this.loading = null;
        for (const event of queued) {
          this.onEvent(this.model, event);
        }
      });
    return this.loading;
  }

  private onEvent(_: ScriptHutModel, event: ServerEvent): void {
    if (this.queued) {
      this.queued.push(event);
      return;
    }
    this.runFeed.apply(event);
    this.timelineFeed.apply(event);
    if (event.run === this.runId && (event.kind === 'task' || event.kind === 'run')) {
      this.costSoon(event.kind === 'run' ? 0 : Math.max(COST_REFRESH_MS, 10 * this.costTook));
    }
  }

  /** Read the cost again within `delay` ms (task events come in bursts: one read each). */
  private costSoon(delay: number): void {
    if (this.costTimer !== null) {
      if (delay > 0) {
        return;
      }
      clearTimeout(this.costTimer);
    }
    this.costTimer = setTimeout(() => {
      this.costTimer = null;
      void this.readCost();
    }, delay);
  }

  /** The run's cost (the server computes it from the stored attempts), without per-task items. */
  private async readCost(): Promise<void> {
    let cost: RunCost;
    const started = Date.now();
    try {
      cost = await this.model.client.cost(this.runId);
      this.costTook = Date.now() - started;
    } catch (error) {
      this.showCost(`Cost unavailable: ${describe(error)}`, '');
      return;
    }
    this.showCost(cost.priced ? `Cost: ${cost.summary}` : '', cost.source);
  }

  private showCost(text: string, source: string): void {
    if (this.isDisposed) {
      return;
    }
    this.cost.textContent = text;
    this.cost.title = source;
    this.cost.hidden = !text;
  }

  private showNote(text: string): void {
    this.note.textContent = text;
    this.note.hidden = !text;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.event.disconnect(this.onEvent, this);
    this.model.refreshed.disconnect(this.reload, this);
    if (this.costTimer !== null) {
      clearTimeout(this.costTimer);
    }
    this.view.destroy();
    this.timeline.destroy();
    super.dispose();
  }
}

export class JobsPanel extends ModelView {
  private readonly table: JobTableView;

  /** `setAllUsers`: the user filter toggle's choice, kept in the panel's settings. */
  constructor(model: ScriptHutModel, setAllUsers: (all: boolean) => void) {
    super(model);
    this.addClass('jp-ScriptHut-jobspanel');
    this.id = 'scripthut-jobs';
    this.title.label = 'ScriptHut jobs';
    const root = h('div', { class: 'sh-root' });
    this.node.append(root);
    this.table = createJobTable(root, model.jobs.store, {
      api: model.client,
      height: 600,
      allUsers: model.allUsers,
      onAllUsersChange: setAllUsers
    });
    model.changed.connect(this.onModelChanged, this);
  }

  private onModelChanged(): void {
    this.table.setAllUsers(this.model.allUsers);
  }

  dispose(): void {
    if (!this.isDisposed) {
      this.model.changed.disconnect(this.onModelChanged, this);
      this.table.destroy();
    }
    super.dispose();
  }
}
