// The panel's Configuration section: the files in use (global, project), their problems
// with lines (a click opens the file at that line in Lab's editor), the merged result with
// the file and line of every key, and Reload. It reads GET config when opened and again
// whenever the server says the configuration changed (a `config` event, or a refresh).

import { h } from '../../widgets/components/format';
import type { ConfigEntry, ConfigState, Issue, ScriptHutClient } from './api';
import { describe } from './api';

export interface ConfigActions {
  /** Open a file (a path relative to the server's root) at a line in Lab's editor. */
  openFile(path: string, line: number): void;
  /** After a reload: the rest of the panel (backends) reads again. */
  reloaded(): void;
}

export class ConfigSection {
  readonly el: HTMLDetailsElement;
  private readonly body = h('div', { class: 'jp-ScriptHut-section-body' });
  private readonly count = h('span', { class: 'jp-ScriptHut-count' });
  private state: ConfigState | null = null;
  private error = '';
  private loading = false;
  private stale = true;
  private mergedOpen = false; // kept across renders

  constructor(
    private readonly client: ScriptHutClient,
    private readonly actions: ConfigActions
  ) {
    const reload = h(
      'button',
      {
        class: 'jp-ScriptHut-button',
        type: 'button',
        'data-action': 'reload-config',
        title: 'Read the configuration files again now'
      },
      'Reload'
    );
    const summary = h(
      'summary',
      {},
      h('span', { class: 'jp-ScriptHut-section-title' }, 'Configuration'),
      this.count
    );
    this.el = h(
      'details',
      { class: 'jp-ScriptHut-section', 'data-section': 'config' },
      summary,
      h('div', { class: 'jp-ScriptHut-filters' }, reload),
      this.body
    );
    this.el.addEventListener('toggle', () => this.el.open && this.stale && void this.load());
    this.el.addEventListener('click', this.onClick);
    this.render();
  }

  /** The configuration changed (or may have): read it again now if shown, else when opened. */
  invalidate(status?: ConfigState): void {
    if (status) {
      this.showStatus(status);
    }
    this.stale = true;
    if (this.el.open) {
      void this.load();
    }
  }

  /** What `health.config` says (no entries): the problem count shows while closed. */
  showStatus(status: ConfigState): void {
    const known = this.state;
    if (!known || known.reloads !== status.reloads || known.status !== status.status) {
      this.stale = true;
    }
    this.count.textContent = status.errors.length ? `${status.errors.length} problems` : '';
    this.el.dataset.status = status.status;
    if (this.stale && this.el.open) {
      void this.load();
    }
  }

  async load(): Promise<void> {
    if (this.loading) {
      return;
    }
    this.loading = true;
    try {
      this.state = await this.client.config();
      this.error = '';
      this.stale = false;
    } catch (error) {
      this.error = describe(error);
    } finally {
      this.loading = false;
    }
    this.render();
  }

  private async reload(): Promise<void> {
    try {
      const outcome = await this.client.reloadConfig();
      this.el.dataset.reload = outcome.status;
    } catch (error) {
      this.error = describe(error);
    }
    this.actions.reloaded();
    await this.load();
  }

  private readonly onClick = (event: MouseEvent): void => {
    const target = (event.target as HTMLElement).closest('[data-action]') as HTMLElement | null;
    if (!target || !this.el.contains(target)) {
      return;
    }
    event.preventDefault();
    const { action, path, line } = target.dataset;
    if (action === 'reload-config') {
      void this.reload();
    } else if (action === 'open-file' && path) {
      this.actions.openFile(path, Number(line) || 1);
    }
  };

  // -- rendering ----------------------------------------------------------------------

  private render(): void {
    const state = this.state;
    const parts: Node[] = [];
    if (this.error) {
      parts.push(h('p', { class: 'jp-ScriptHut-message' }, this.error));
    }
    if (!state) {
      parts.push(h('p', { class: 'jp-ScriptHut-empty' }, this.error ? '' : 'Loading…'));
      this.body.replaceChildren(...parts);
      return;
    }
    this.el.dataset.status = state.status;
    this.count.textContent = state.errors.length ? `${state.errors.length} problems` : '';
    parts.push(this.files(state), this.problems(state), this.entries(state));
    for (const notice of state.notices ?? []) {
      parts.push(h('p', { class: 'jp-ScriptHut-muted' }, notice));
    }
    this.body.replaceChildren(...parts);
  }

  private link(file: string, line: number | null | undefined, text: string): HTMLElement {
    const path = this.state?.lab_paths?.[file];
    if (!path) {
      return h('code', { title: `${file} (outside the server's root: open it yourself)` }, text);
    }
    return h(
      'a',
      {
        href: '#',
        class: 'jp-ScriptHut-file',
        'data-action': 'open-file',
        'data-path': path,
        'data-line': String(line ?? 1),
        title: `Open ${file}${line ? ` at line ${line}` : ''}`
      },
      text
    );
  }

  private files(state: ConfigState): HTMLElement {
    return h(
      'ul',
      { class: 'jp-ScriptHut-config-files' },
      ...state.files.map(f =>
        h(
          'li',
          { 'data-layer': f.layer },
          h('strong', {}, `${f.layer} `),
          f.exists ? this.link(f.path, 1, f.path) : h('code', {}, f.path),
          f.exists ? null : h('span', { class: 'jp-ScriptHut-muted' }, ' (none: defaults)')
        )
      )
    );
  }

  private problems(state: ConfigState): HTMLElement {
    if (!state.errors.length) {
      return h('p', { class: 'jp-ScriptHut-muted', 'data-problems': '0' }, 'No problems');
    }
    const head = state.message
      ? `${state.message}: the running configuration is kept until it is fixed`
      : 'Problems';
    return h(
      'div',
      { class: 'jp-ScriptHut-config-problems', 'data-problems': String(state.errors.length) },
      h('p', {}, h('strong', {}, head)),
      h('ul', { class: 'jp-ScriptHut-errors' }, ...state.errors.map(e => this.problem(e)))
    );
  }

  private problem(issue: Issue): HTMLElement {
    const place = issue.file
      ? this.link(issue.file, issue.line, `${fileName(issue.file)}:${issue.line ?? '?'}`)
      : h('code', {}, issue.where);
    return h(
      'li',
      { 'data-file': issue.file ?? '', 'data-line': String(issue.line ?? '') },
      place,
      ' ',
      `${issue.where.replace(`${issue.file ?? ''}: `, '')}${issue.field ? `, field '${issue.field}'` : ''}: ${issue.message}`
    );
  }

  private entries(state: ConfigState): HTMLElement {
    const set = (state.entries ?? []).filter(e => e.file);
    const merged = h(
      'details',
      { class: 'jp-ScriptHut-config-merged', open: this.mergedOpen },
      h('summary', {}, `Merged result (${set.length} keys set by the files)`),
      h('div', { class: 'jp-ScriptHut-config-entries' }, ...set.map(e => this.entry(e)))
    );
    merged.addEventListener('toggle', () => (this.mergedOpen = merged.open));
    return merged;
  }

  private entry(entry: ConfigEntry): HTMLElement {
    const origin = entry.file
      ? this.link(entry.file, entry.line, `${fileName(entry.file)}:${entry.line ?? '?'}`)
      : h('span', { class: 'jp-ScriptHut-muted' }, 'default');
    return h(
      'div',
      { class: 'jp-ScriptHut-config-entry', 'data-key': entry.key },
      h('code', {}, `${entry.key} = ${JSON.stringify(entry.value)}`),
      ' ',
      origin
    );
  }
}

function fileName(path: string): string {
  const parts = path.split('/');
  return parts.length > 2 ? parts.slice(-2).join('/') : path;
}
