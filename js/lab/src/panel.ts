// The left-sidebar panel: the state of the server side, backends, runs with progress,
// and the live job list. It renders the model; actions are commands (the palette and
// keyboard shortcuts reach them too), passed in as callbacks.

import { h, statePill, userToggle } from '../../widgets/components/format';
import { createProgress } from '../../widgets/components/progress';
import { frameThrottle } from '../../widgets/components/store';
import type { Backend, Run } from './api';
import { ConfigSection } from './configview';
import { ModelView } from './modelview';
import type { ScriptHutModel } from './model';
import { SourcesSection } from './sources';

export interface PanelActions {
  openRun(id: string): void;
  cancelRun(id: string): void;
  rerunRun(id: string): void;
  notifyRun(id: string): void;
  cancelJob(backend: string, jobId: string): void;
  openJobs(): void;
  refresh(): void;
  setShowExternal(show: boolean): void;
  setAllUsers(all: boolean): void;
  openFile(path: string, line: number): void;
}

export interface PanelOptions {
  showExternalJobs: boolean;
  allUsers: boolean;
  jobsShown: number;
  refreshInterval: number;
}

const ACTIVE_RUN = new Set(['pending', 'running']);
const RERUNNABLE = ['failed', 'dep_failed', 'cancelled'];
const ACTIVE_JOB = new Set(['pending', 'running']);
const JOB_STATES = ['pending', 'running', 'completed', 'failed', 'cancelled', 'unknown'];

function section(
  name: string,
  title: string,
  ...extra: Node[]
): {
  el: HTMLElement;
  body: HTMLElement;
  count: HTMLElement;
} {
  const count = h('span', { class: 'jp-ScriptHut-count' });
  const summary = h(
    'summary',
    {},
    h('span', { class: 'jp-ScriptHut-section-title' }, title),
    count
  );
  const body = h('div', { class: 'jp-ScriptHut-section-body' });
  const el = h(
    'details',
    { class: 'jp-ScriptHut-section', 'data-section': name, open: true },
    summary,
    ...extra,
    body
  );
  return { el, body, count };
}

function button(
  label: string,
  action: string,
  title: string,
  extra: Record<string, string> = {}
): HTMLButtonElement {
  return h(
    'button',
    { class: 'jp-ScriptHut-button', type: 'button', 'data-action': action, title, ...extra },
    label
  );
}

export class ScriptHutPanel extends ModelView {
  private readonly banner = h('div', { class: 'jp-ScriptHut-banner', hidden: true });
  private readonly connection = h('span', { class: 'jp-ScriptHut-connection' });
  private readonly backendsSection = section('backends', 'Backends');
  private readonly runsSection = section('runs', 'Runs');
  private readonly stateFilter = h('select', {
    class: 'jp-ScriptHut-select',
    'aria-label': 'job state',
    'data-filter': 'state'
  });
  private readonly backendFilter = h('select', {
    class: 'jp-ScriptHut-select',
    'aria-label': 'job backend',
    'data-filter': 'backend'
  });
  private readonly externalToggle = h('input', { type: 'checkbox', 'data-filter': 'external' });
  /** "only <user>'s jobs" / "all users": shown when scripthut.yaml sets settings.filter_user. */
  private readonly usersToggle = button('', 'toggle-users', '', {
    'data-filter': 'users',
    hidden: ''
  });
  private readonly jobsSection: ReturnType<typeof section>;
  private readonly sourcesSection: SourcesSection;
  private readonly configSection: ConfigSection;
  private readonly schedule = frameThrottle(() => this.render());
  private filters = { state: '', backend: '' };

  constructor(
    model: ScriptHutModel,
    private readonly actions: PanelActions,
    private options: PanelOptions
  ) {
    super(model);
    this.addClass('jp-ScriptHut-panel');
    this.id = 'scripthut-panel';
    this.title.caption = 'ScriptHut';

    const refresh = button('⟳', 'refresh', 'Refresh now');
    const header = h(
      'div',
      { class: 'jp-ScriptHut-header' },
      h('span', { class: 'jp-ScriptHut-title' }, 'ScriptHut'),
      this.connection,
      h('span', { class: 'jp-ScriptHut-spacer' }),
      refresh
    );
    const toolbar = h(
      'div',
      { class: 'jp-ScriptHut-filters' },
      this.stateFilter,
      this.backendFilter,
      h(
        'label',
        { class: 'jp-ScriptHut-toggle', title: 'Also list jobs not started by ScriptHut' },
        this.externalToggle,
        'external'
      ),
      this.usersToggle,
      button('table', 'open-jobs', 'Open the job table in the main area')
    );
    this.jobsSection = section('jobs', 'Jobs', toolbar);
    this.configSection = new ConfigSection(model.client, {
      openFile: (path, line) => this.actions.openFile(path, line),
      reloaded: () => this.actions.refresh()
    });
    this.externalToggle.checked = options.showExternalJobs;
    this.sourcesSection = new SourcesSection({
      client: model.client,
      backends: () => (model.backends?.backends ?? []).map(b => b.name),
      openRun: id => actions.openRun(id)
    });
    this.node.append(
      header,
      this.banner,
      this.backendsSection.el,
      this.sourcesSection.el,
      this.runsSection.el,
      this.jobsSection.el,
      this.configSection.el
    );
    model.refreshed.connect(() => void this.sourcesSection.load(), this);
    this.stateFilter.addEventListener('change', () => {
      this.filters.state = this.stateFilter.value;
      this.schedule();
    });
    this.backendFilter.addEventListener('change', () => {
      this.filters.backend = this.backendFilter.value;
      this.schedule();
    });
    this.externalToggle.addEventListener('change', () =>
      this.actions.setShowExternal(this.externalToggle.checked)
    );
    this.node.addEventListener('click', this.onClick);
    model.changed.connect(this.schedule, this);
    model.configChanged.connect(this.onConfigChanged, this);
    this.render();
  }

  private onConfigChanged(): void {
    this.configSection.invalidate();
  }

  configure(options: Partial<PanelOptions>): void {
    this.options = { ...this.options, ...options };
    this.externalToggle.checked = this.options.showExternalJobs;
    this.schedule();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.schedule.cancel();
    this.sourcesSection.dispose();
    this.model.changed.disconnect(this.schedule, this);
    this.model.configChanged.disconnect(this.onConfigChanged, this);
    super.dispose();
  }

  private readonly onClick = (event: MouseEvent): void => {
    const target = (event.target as HTMLElement).closest('[data-action]') as HTMLElement | null;
    if (!target || !this.node.contains(target)) {
      return;
    }
    const { action } = target.dataset;
    const run = target.closest('[data-run-id]') as HTMLElement | null;
    const job = target.closest('[data-job-id]') as HTMLElement | null;
    const runId = run?.dataset.runId ?? '';
    if (action === 'refresh') {
      this.actions.refresh();
    } else if (action === 'open-jobs') {
      this.actions.openJobs();
    } else if (action === 'toggle-users') {
      this.actions.setAllUsers(!this.options.allUsers);
    } else if (action === 'open' && runId) {
      this.actions.openRun(runId);
    } else if (action === 'cancel' && runId) {
      this.actions.cancelRun(runId);
    } else if (action === 'rerun' && runId) {
      this.actions.rerunRun(runId);
    } else if (action === 'notify' && runId) {
      this.actions.notifyRun(runId);
    } else if (action === 'cancel-job' && job) {
      this.actions.cancelJob(job.dataset.backend ?? '', job.dataset.jobId ?? '');
    }
  };

  // -- rendering ----------------------------------------------------------------------

  private render(): void {
    const model = this.model;
    this.node.dataset.status = model.status;
    this.node.dataset.connection = model.connection;
    this.renderConnection();
    this.renderBanner();
    const usable = model.status === 'ok';
    this.backendsSection.el.hidden = !usable && !model.backends;
    this.runsSection.el.hidden = !usable && !model.runs.length;
    this.jobsSection.el.hidden = !usable && !model.jobs.rows.length;
    this.configSection.el.hidden = !usable && model.status !== 'config_error';
    this.renderBackends();
    this.renderRuns();
    this.renderJobs();
    const config = model.health?.config;
    if (config) {
      this.configSection.showStatus(config);
    }
  }

  private renderConnection(): void {
    const state = this.model.connection;
    const text: Record<string, string> = {
      live: 'live',
      connecting: 'connecting…',
      polling: `polling (${this.options.refreshInterval} s)`,
      paused: 'paused'
    };
    this.connection.textContent = this.model.status === 'ok' ? text[state] : '';
    this.connection.dataset.state = state;
    this.connection.title =
      state === 'live'
        ? 'Following the server’s event stream'
        : state === 'polling'
          ? 'The event stream is down: refreshing on a timer'
          : '';
  }

  private renderBanner(): void {
    const model = this.model;
    const health = model.health;
    const parts: Node[] = [];
    let kind = model.status as string;
    switch (model.status) {
      case 'loading':
        parts.push(h('p', {}, model.message || 'Connecting to ScriptHut…'));
        break;
      case 'not_installed':
        parts.push(
          h(
            'p',
            {},
            h('strong', {}, 'The ScriptHut server extension is not running on this Jupyter server.')
          ),
          h(
            'p',
            {},
            'Install ScriptHut in the environment the server runs from and enable it: ',
            h('code', {}, 'pip install scripthut'),
            ', then ',
            h('code', {}, 'jupyter server extension enable scripthut'),
            ', and restart the server.'
          )
        );
        break;
      case 'config_error': {
        parts.push(h('p', {}, h('strong', {}, 'scripthut.yaml has errors.')));
        if (health?.config_file) {
          parts.push(h('p', {}, 'File: ', h('code', {}, health.config_file)));
        }
        const errors = health?.errors ?? [];
        if (errors.length) {
          parts.push(
            h(
              'ul',
              { class: 'jp-ScriptHut-errors' },
              ...errors.map(e =>
                h(
                  'li',
                  {},
                  h('code', {}, `${e.where}${e.field ? `.${e.field}` : ''}`),
                  ': ',
                  e.message
                )
              )
            )
          );
        } else if (model.message) {
          parts.push(h('p', {}, model.message));
        }
        parts.push(
          h(
            'p',
            {},
            'Fix the file: ScriptHut starts as soon as it is valid, without a restart. ',
            'The Configuration section below opens each problem at its line.'
          )
        );
        break;
      }
      case 'error':
        parts.push(h('p', {}, h('strong', {}, 'ScriptHut could not start. '), model.message));
        break;
      case 'forbidden':
        parts.push(
          h('p', {}, h('strong', {}, 'Not allowed to use ScriptHut here. '), model.message),
          h('p', {}, 'Log in again, or ask for the scripthut:* scopes on this server.')
        );
        break;
      case 'offline':
        parts.push(
          h('p', {}, h('strong', {}, 'Cannot reach the Jupyter server. '), 'Retrying…'),
          h('p', { class: 'jp-ScriptHut-detail' }, model.message)
        );
        break;
      default: {
        kind = '';
        if (health?.mode === 'client') {
          kind = 'client';
          parts.push(
            h(
              'p',
              {},
              health.message ||
                'Another process drives the ScriptHut data directory: actions are queued for it.'
            )
          );
        }
        const down = (model.backends?.backends ?? []).filter(b => b.status === 'unreachable');
        if (down.length) {
          kind = kind || 'unreachable';
          parts.push(
            h(
              'p',
              {},
              h('strong', {}, `Unreachable: ${down.map(b => b.name).join(', ')}. `),
              'Their jobs are shown as last known; states are not updated until they answer.'
            )
          );
        }
        if (model.backendsError) {
          parts.push(h('p', {}, `Backends: ${model.backendsError}`));
        }
        const config = health?.config;
        if (config && config.status === 'error') {
          kind = kind || 'config';
          parts.push(
            h(
              'p',
              {},
              h('strong', {}, `The configuration has ${config.errors.length} problem(s). `),
              'The running configuration is kept until they are fixed: see Configuration below.'
            )
          );
        }
      }
    }
    this.banner.hidden = !parts.length;
    this.banner.dataset.kind = kind;
    this.banner.replaceChildren(...parts);
  }

  private renderBackends(): void {
    const backends = this.model.backends?.backends ?? [];
    const fallback = this.model.backends?.default;
    this.backendsSection.count.textContent = backends.length ? String(backends.length) : '';
    if (!backends.length) {
      this.backendsSection.body.replaceChildren(
        h('p', { class: 'jp-ScriptHut-empty' }, 'No backends')
      );
      return;
    }
    this.backendsSection.body.replaceChildren(
      ...backends.map(b => this.backendRow(b, b.name === fallback))
    );
  }

  private backendRow(b: Backend, isDefault: boolean): HTMLElement {
    const info = b.info ?? {};
    const facts: string[] = [];
    if (info.cpus_total !== null && info.cpus_total !== undefined) {
      facts.push(`${info.cpus_idle ?? '?'}/${info.cpus_total} CPUs idle`);
    }
    if (info.queue_depth !== null && info.queue_depth !== undefined) {
      facts.push(`queue ${info.queue_depth}`);
    }
    if (b.active_jobs) {
      facts.push(`${b.active_jobs} active`);
    }
    const statusText: Record<string, string> = {
      ok: 'reachable',
      unreachable: 'unreachable',
      unavailable: 'unavailable',
      error: 'error'
    };
    return h(
      'div',
      { class: 'jp-ScriptHut-backend', 'data-backend': b.name, 'data-status': b.status },
      h(
        'div',
        { class: 'jp-ScriptHut-row' },
        h('span', { class: 'jp-ScriptHut-dot', title: statusText[b.status] ?? b.status }),
        h('strong', {}, b.name),
        h(
          'span',
          { class: 'jp-ScriptHut-muted' },
          ` ${b.type}${b.transport && b.transport !== 'local' && b.type !== 'local' ? ` · ${b.transport}` : ''}${isDefault ? ' · default' : ''}`
        ),
        h('span', { class: 'jp-ScriptHut-spacer' }),
        h(
          'span',
          { class: 'jp-ScriptHut-status', 'data-status': b.status },
          statusText[b.status] ?? b.status
        )
      ),
      facts.length ? h('div', { class: 'jp-ScriptHut-facts' }, facts.join(' · ')) : null,
      b.message && b.status !== 'ok' ? h('div', { class: 'jp-ScriptHut-message' }, b.message) : null
    );
  }

  private renderRuns(): void {
    const runs = this.model.runs;
    const total = this.model.runsTotal;
    this.runsSection.count.textContent = total ? String(total) : '';
    if (!runs.length) {
      this.runsSection.body.replaceChildren(
        h(
          'p',
          { class: 'jp-ScriptHut-empty' },
          'No runs yet. Right-click a workflow JSON file: Run with ScriptHut.'
        )
      );
      return;
    }
    this.runsSection.body.replaceChildren(...runs.map(r => this.runRow(r)));
  }

  private runRow(run: Run): HTMLElement {
    const progress = createProgress();
    progress.update(run.counts ?? {}, run.total || undefined);
    const active = ACTIVE_RUN.has(run.state);
    const rerunnable = !active && RERUNNABLE.some(s => (run.counts ?? {})[s]);
    const actions = h(
      'div',
      { class: 'jp-ScriptHut-actions' },
      button('Open', 'open', 'Open the run: DAG, timeline, task logs'),
      active && !run.cancel_requested ? button('Cancel', 'cancel', 'Cancel the run') : null,
      active
        ? button('Notify', 'notify', 'Email / message me when this run ends (scripthut.yaml)')
        : null,
      rerunnable
        ? button('Rerun', 'rerun', 'Run failed, cancelled and dep_failed tasks again')
        : null
    );
    const name = run.name && run.name !== run.id ? run.name : run.id;
    return h(
      'div',
      { class: 'jp-ScriptHut-run', 'data-run-id': run.id, 'data-state': run.state },
      h(
        'div',
        { class: 'jp-ScriptHut-row' },
        h(
          'a',
          { class: 'jp-ScriptHut-name', 'data-action': 'open', href: '#', title: run.id },
          name
        ),
        h('span', { class: 'jp-ScriptHut-spacer' }),
        statePill(run.state)
      ),
      h('div', { class: 'jp-ScriptHut-facts' }, `${run.id} · ${run.backend}`),
      progress.el,
      run.message ? h('div', { class: 'jp-ScriptHut-message' }, run.message) : null,
      actions
    );
  }

  private renderUsersToggle(): void {
    const toggle = userToggle(this.model.defaultUserFilter, this.options.allUsers);
    this.usersToggle.hidden = !toggle.shown;
    this.usersToggle.textContent = toggle.label;
    this.usersToggle.title = toggle.title;
    this.usersToggle.setAttribute('aria-pressed', String(this.options.allUsers));
    // What the list holds now (empty: every user's), as its last read said.
    this.jobsSection.el.dataset.userFilter = this.model.userFilter ?? '';
  }

  private renderJobs(): void {
    this.renderUsersToggle();
    const all = this.model.jobs.rows;
    const showExternal = this.options.showExternalJobs;
    const rows = all.filter(r => showExternal || r.source !== 'external');
    this.setOptions(this.stateFilter, 'any state', JOB_STATES, this.filters.state);
    const backends = Array.from(
      new Set([
        ...(this.model.backends?.backends ?? []).map(b => b.name),
        ...rows.map(r => String(r.backend))
      ])
    ).sort();
    this.setOptions(this.backendFilter, 'any backend', backends, this.filters.backend);
    const shown = rows
      .filter(r => !this.filters.state || r.state === this.filters.state)
      .filter(r => !this.filters.backend || r.backend === this.filters.backend)
      .sort((a, b) => {
        const active =
          Number(ACTIVE_JOB.has(String(b.state))) - Number(ACTIVE_JOB.has(String(a.state)));
        return active || (b.submitted_at ?? 0) - (a.submitted_at ?? 0);
      });
    const external = all.filter(r => r.source === 'external').length;
    const active = rows.filter(r => ACTIVE_JOB.has(String(r.state))).length;
    this.jobsSection.count.textContent = rows.length ? `${active} active` : '';
    // The local backend has no "other jobs" to list: only schedulers that failed to say are worth a note.
    const local = new Set(
      (this.model.backends?.backends ?? []).filter(b => b.type === 'local').map(b => b.name)
    );
    const unknown = this.model.externalUnknown.filter(name => !local.has(name));
    const notes: Node[] = [];
    if (showExternal && unknown.length) {
      notes.push(
        h('p', { class: 'jp-ScriptHut-muted' }, `Other jobs unknown on: ${unknown.join(', ')}`)
      );
    }
    if (!shown.length) {
      this.jobsSection.body.replaceChildren(
        h(
          'p',
          { class: 'jp-ScriptHut-empty' },
          rows.length ? 'No job matches the filters' : 'No jobs'
        ),
        ...notes
      );
      return;
    }
    const limit = this.options.jobsShown;
    const list = shown.slice(0, limit).map(r =>
      h(
        'div',
        {
          class: 'jp-ScriptHut-job',
          'data-job-id': String(r.job_id),
          'data-backend': String(r.backend),
          'data-state': String(r.state),
          'data-source': String(r.source),
          'data-run-id': r.run ? String(r.run) : undefined
        },
        h(
          'div',
          { class: 'jp-ScriptHut-row' },
          statePill(r.state),
          h(
            'span',
            { class: 'jp-ScriptHut-name', title: String(r.name ?? '') },
            String(r.task ?? r.name ?? r.job_id)
          ),
          h('span', { class: 'jp-ScriptHut-spacer' }),
          ACTIVE_JOB.has(String(r.state))
            ? button('×', 'cancel-job', `Cancel job ${r.job_id}`)
            : null
        ),
        h(
          'div',
          { class: 'jp-ScriptHut-facts' },
          [
            `${r.backend} ${r.job_id}`,
            r.source === 'external'
              ? `external${r.user ? ` (${r.user})` : ''}`
              : r.run
                ? String(r.run)
                : '',
            r.partition ? String(r.partition) : '',
            r.reason && r.state === 'pending' ? String(r.reason) : ''
          ]
            .filter(Boolean)
            .join(' · ')
        )
      )
    );
    if (shown.length > limit) {
      notes.unshift(
        h(
          'p',
          { class: 'jp-ScriptHut-muted' },
          `… and ${shown.length - limit} more: open the job table`
        )
      );
    }
    if (external && !showExternal) {
      notes.push(h('p', { class: 'jp-ScriptHut-muted' }, `${external} external jobs hidden`));
    }
    this.jobsSection.body.replaceChildren(...list, ...notes);
  }

  private setOptions(
    node: HTMLSelectElement,
    anyLabel: string,
    values: string[],
    chosen: string
  ): void {
    const wanted = ['', ...values];
    if (chosen && !wanted.includes(chosen)) {
      wanted.push(chosen);
    }
    const current = Array.from(node.options).map(o => o.value);
    if (current.join('\u0000') !== wanted.join('\u0000')) {
      node.replaceChildren(...wanted.map(v => h('option', { value: v }, v || anyLabel)));
    }
    node.value = chosen;
  }
}
