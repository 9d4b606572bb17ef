// "Run with ScriptHut" on a notebook: a dialog with the backend, the notebook's parameters
// (read from its cell tagged `parameters`) and an optional grid of values to sweep; the
// run is one notebook task (a `matrix` when a grid is given).

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { h } from '../../widgets/components/format';
import type { Backend } from './api';
import { BackendChooser } from './dialog';

type Row = Record<string, unknown>;

/** `name = value` lines of the notebook's `parameters` cell, values as written. */
export function notebookParameters(notebook: unknown): Array<[string, string]> {
  const cells = ((notebook as Row)?.cells ?? []) as Row[];
  const cell = cells.find(
    c => c.cell_type === 'code' && (((c.metadata as Row)?.tags ?? []) as string[]).includes('parameters')
  );
  if (!cell) {
    return [];
  }
  const source = Array.isArray(cell.source) ? cell.source.join('') : String(cell.source ?? '');
  const found: Array<[string, string]> = [];
  for (const line of source.split('\n')) {
    const match = /^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=\s*(.*?)\s*(?:#.*)?$/.exec(line);
    if (match && match[2]) {
      found.push([match[1], match[2]]);
    }
  }
  return found;
}

/** A Python literal as JSON: True/False/None, numbers, quoted strings, lists; else the text. */
export function literal(text: string): unknown {
  const t = text.trim();
  const words: Row = { True: true, False: false, None: null };
  if (t in words) {
    return words[t];
  }
  if (/^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
    return Number(t);
  }
  const quoted = /^(['"])(.*)\1$/s.exec(t);
  if (quoted) {
    return quoted[2];
  }
  try {
    return JSON.parse(t.replace(/\bTrue\b/g, 'true').replace(/\bFalse\b/g, 'false').replace(/\bNone\b/g, 'null').replace(/'/g, '"'));
  } catch {
    return t;
  }
}

/** Values of a grid field: comma-separated literals (none: not swept). */
export function gridValues(text: string): unknown[] {
  return text.trim() ? text.split(',').map(part => literal(part)) : [];
}

export interface NotebookRunChoice {
  backend: string;
  parameters: Row;
  matrix: Row;
}

class NotebookRunForm extends Widget {
  private readonly chooser: BackendChooser;
  private readonly fields: Array<[string, HTMLInputElement, HTMLInputElement]> = [];

  constructor(path: string, parameters: Array<[string, string]>, backends: Backend[], preferred: string) {
    super();
    this.addClass('jp-ScriptHut-chooser');
    this.chooser = new BackendChooser(path, backends, preferred);
    const rows = parameters.map(([name, value]) => {
      const single = h('input', { class: 'jp-mod-styled', name: `param-${name}`, value });
      const grid = h('input', {
        class: 'jp-mod-styled',
        name: `grid-${name}`,
        placeholder: 'sweep: 1, 2, 3'
      });
      this.fields.push([name, single, grid]);
      return h('tr', {}, h('td', {}, h('code', {}, name)), h('td', {}, single), h('td', {}, grid));
    });
    const table = rows.length
      ? h(
          'table',
          { class: 'jp-ScriptHut-params' },
          h('thead', {}, h('tr', {}, h('th', {}, 'parameter'), h('th', {}, 'value'), h('th', {}, 'grid (optional)'))),
          h('tbody', {}, ...rows)
        )
      : h('p', { class: 'jp-ScriptHut-muted' }, 'No cell tagged "parameters": the notebook runs as it is.');
    this.node.append(this.chooser.node, table);
  }

  getValue(): NotebookRunChoice {
    const parameters: Row = {};
    const matrix: Row = {};
    for (const [name, single, grid] of this.fields) {
      const values = gridValues(grid.value);
      if (values.length) {
        matrix[name] = values;
      } else {
        parameters[name] = literal(single.value);
      }
    }
    return { backend: this.chooser.getValue(), parameters, matrix };
  }
}

/** Ask for backend, parameters and grid; null when the user cancels. */
export async function chooseNotebookRun(
  path: string,
  notebook: unknown,
  backends: Backend[],
  preferred: string
): Promise<NotebookRunChoice | null> {
  const body = new NotebookRunForm(path, notebookParameters(notebook), backends, preferred);
  const result = await showDialog({
    title: 'Run notebook with ScriptHut',
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run' })],
    focusNodeSelector: 'select'
  });
  return result.button.accept && result.value ? result.value : null;
}

/** The run's document: one notebook task, anchored at the notebook's folder. */
export function notebookDocument(path: string, choice: NotebookRunChoice): Row {
  const slash = path.lastIndexOf('/');
  const file = path.slice(slash + 1);
  const stem = file.replace(/\.ipynb$/, '').replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]+/, '') || 'notebook';
  const task: Row = { id: stem, notebook: file, working_dir: slash > 0 ? path.slice(0, slash) : '.' };
  if (Object.keys(choice.parameters).length) {
    task.parameters = choice.parameters;
  }
  if (Object.keys(choice.matrix).length) {
    task.matrix = choice.matrix;
  }
  return { title: file, tasks: [task] };
}
