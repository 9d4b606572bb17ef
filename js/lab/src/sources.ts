// The panel's Sources section: each source with its last sync (commit, time, error), its
// workflow files (title, task count, validity), a Sync button, a dry-run preview that draws
// the tasks with the run view's DAG component, and Run with a backend and branch choice.

import { buildUnits, DagGroups, DagTask } from '../../widgets/components/dag';
import { h } from '../../widgets/components/format';
import { createGraph, GraphView } from '../../widgets/components/graph';
import { describe, ScriptHutClient, Source, SourceChoice, SyncState } from './api';

export interface SourcesOptions {
  client: ScriptHutClient;
  backends: () => string[];
  openRun: (id: string) => void;
}

function when(seconds?: number | null): string {
  return seconds ? new Date(seconds * 1000).toLocaleString() : 'never';
}

function syncLine(source: Source, state: SyncState | undefined): HTMLElement {
  if (!state) {
    return h('div', { class: 'jp-ScriptHut-muted' }, 'never synced');
  }
  const what = state.sha ? state.sha.slice(0, 12) : (state.root ?? '');
  const facts = [state.branch ?? '', what, `synced ${when(state.synced_at)}`].filter(Boolean);
  return h(
    'div',
    { class: 'jp-ScriptHut-facts', 'data-sha': state.sha ?? '' },
    `${state.backend}: ${facts.join(' · ')}`
  );
}

export class SourcesSection {
  readonly el: HTMLElement;
  private readonly body = h('div', { class: 'jp-ScriptHut-section-body' });
  private readonly count = h('span', { class: 'jp-ScriptHut-count' });
  private readonly preview = h('div', { class: 'jp-ScriptHut-preview sh-root', hidden: true });
  private graph: GraphView | null = null;
  private sources: Source[] = [];
  private readonly busy = new Set<string>();
  private readonly notes = new Map<string, string>();

  constructor(private readonly options: SourcesOptions) {
    const summary = h(
      'summary',
      {},
      h('span', { class: 'jp-ScriptHut-section-title' }, 'Sources'),
      this.count
    );
    this.el = h(
      'details',
      { class: 'jp-ScriptHut-section', 'data-section': 'sources', open: true },
      summary,
      this.body,
      this.preview
    );
    this.el.addEventListener('click', this.onClick);
  }

  /** Read the sources and their last syncs (no git traffic: that is what Sync does). */
  async load(): Promise<void> {
    try {
      this.sources = (await this.options.client.sources()).sources;
    } catch (error) {
      this.notes.set('', describe(error));
    }
    this.render();
  }

  dispose(): void {
    this.graph?.destroy();
  }

  private choice(name: string, file?: string): SourceChoice {
    const row = this.body.querySelector(`[data-source="${CSS.escape(name)}"]`);
    const branch = (row?.querySelector('input[name="branch"]') as HTMLInputElement | null)?.value;
    const backend = (row?.querySelector('select[name="backend"]') as HTMLSelectElement | null)
      ?.value;
    const out: SourceChoice = {};
    if (file) {
      out.file = file;
    }
    if (branch) {
      out.branch = branch;
    }
    if (backend) {
      out.backend = backend;
    }
    return out;
  }

  private readonly onClick = (event: MouseEvent): void => {
    const target = (event.target as HTMLElement).closest('[data-source-action]') as
      | HTMLElement
      | null;
    if (!target) {
      return;
    }
    const row = target.closest('[data-source]') as HTMLElement | null;
    const name = row?.dataset.source ?? '';
    const file = (target.closest('[data-file]') as HTMLElement | null)?.dataset.file;
    const action = target.dataset.sourceAction;
    if (action === 'sync') {
      void this.act(name, () => this.sync(name));
    } else if (action === 'preview' && file) {
      void this.act(name, () => this.dryRun(name, file));
    } else if (action === 'run' && file) {
      void this.act(name, () => this.run(name, file));
    } else if (action === 'close-preview') {
      this.preview.hidden = true;
    }
  };

  private async act(name: string, work: () => Promise<void>): Promise<void> {
    if (this.busy.has(name)) {
      return;
    }
    this.busy.add(name);
    this.notes.delete(name);
    this.render();
    try {
      await work();
    } catch (error) {
      this.notes.set(name, describe(error));
    } finally {
      this.busy.delete(name);
      this.render();
    }
  }

  private async sync(name: string): Promise<void> {
    const choice = this.choice(name);
    delete choice.file;
    await this.options.client.syncSource(name, choice);
    this.sources = (await this.options.client.sources()).sources;
  }

  private async dryRun(name: string, file: string): Promise<void> {
    const dry = await this.options.client.dryRunSource(name, this.choice(name, file));
    const tasks = new Map<string, DagTask>();
    for (const task of dry.document.tasks ?? []) {
      const id = String(task.id);
      tasks.set(id, { id, state: 'pending', deps: dry.deps[id] ?? [] });
    }
    this.graph?.destroy();
    this.graph = createGraph({ onUnitClick: () => undefined });
    const git = (dry.provenance?.git ?? null) as { sha?: string } | null;
    const head = h(
      'div',
      { class: 'jp-ScriptHut-row' },
      h(
        'span',
        { class: 'jp-ScriptHut-preview-title' },
        `${name}: ${file} — ${dry.tasks} tasks, ${dry.edges} dependencies` +
          (git?.sha ? ` @ ${git.sha.slice(0, 12)}` : '')
      ),
      h('span', { class: 'jp-ScriptHut-spacer' }),
      h(
        'button',
        { class: 'jp-ScriptHut-button', type: 'button', 'data-source-action': 'close-preview' },
        '×'
      )
    );
    this.preview.replaceChildren(head, this.graph.el);
    this.preview.dataset.source = name;
    this.preview.dataset.file = file;
    this.preview.hidden = false;
    const ids = Array.from(tasks.keys());
    this.graph.draw(buildUnits(tasks, new DagGroups(ids), new Set()));
  }

  private async run(name: string, file: string): Promise<void> {
    const run = await this.options.client.runSource(name, this.choice(name, file));
    this.options.openRun(run.id);
  }

  private render(): void {
    this.count.textContent = this.sources.length ? String(this.sources.length) : '';
    this.el.hidden = this.sources.length === 0 && !this.notes.has('');
    const rows = this.sources.map(source => this.sourceRow(source));
    const note = this.notes.get('');
    this.body.replaceChildren(
      ...(note ? [h('div', { class: 'jp-ScriptHut-message' }, note)] : []),
      ...rows
    );
  }

  private sourceRow(source: Source): HTMLElement {
    const state = source.syncs[0];
    const busy = this.busy.has(source.name);
    const backends = this.options.backends();
    const select = h(
      'select',
      { class: 'jp-ScriptHut-select', name: 'backend', 'aria-label': 'backend' },
      ...backends.map(b =>
        h('option', b === source.backend ? { value: b, selected: true } : { value: b }, b)
      )
    );
    const branch = h('input', {
      class: 'jp-ScriptHut-input',
      name: 'branch',
      placeholder: source.branch ?? '',
      'aria-label': 'branch',
      size: 8
    });
    const note = this.notes.get(source.name) ?? state?.error ?? '';
    const files = (state?.files ?? []).map(file =>
      h(
        'div',
        {
          class: 'jp-ScriptHut-source-file',
          'data-file': file.path,
          'data-valid': String(file.valid)
        },
        h('span', { class: 'jp-ScriptHut-file-title' }, file.title || file.path),
        h(
          'span',
          { class: 'jp-ScriptHut-muted' },
          file.valid ? ` ${file.tasks} tasks` : ' invalid'
        ),
        h('span', { class: 'jp-ScriptHut-spacer' }),
        file.valid
          ? h(
              'span',
              {},
              h(
                'button',
                { class: 'jp-ScriptHut-button', type: 'button', 'data-source-action': 'preview' },
                'Preview'
              ),
              h(
                'button',
                { class: 'jp-ScriptHut-button', type: 'button', 'data-source-action': 'run' },
                'Run'
              )
            )
          : h('div', { class: 'jp-ScriptHut-message' }, file.issues.join('; '))
      )
    );
    return h(
      'div',
      {
        class: 'jp-ScriptHut-source',
        'data-source': source.name,
        'data-busy': String(busy),
        'data-error': state?.error ? 'true' : 'false'
      },
      h(
        'div',
        { class: 'jp-ScriptHut-row' },
        h('span', { class: 'jp-ScriptHut-name' }, source.name),
        h('span', { class: 'jp-ScriptHut-muted' }, ` ${source.type}`),
        h('span', { class: 'jp-ScriptHut-spacer' }),
        h(
          'button',
          {
            class: 'jp-ScriptHut-button',
            type: 'button',
            'data-source-action': 'sync',
            title: 'Sync now',
            ...(busy ? { disabled: '' } : {})
          },
          busy ? '…' : 'Sync'
        )
      ),
      syncLine(source, state),
      h('div', { class: 'jp-ScriptHut-filters' }, select, branch),
      note ? h('div', { class: 'jp-ScriptHut-message' }, note) : null,
      ...files
    );
  }
}
