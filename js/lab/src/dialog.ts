// "Run with ScriptHut": choose the backend for a workflow file.

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { h } from '../../widgets/components/format';
import type { Backend } from './api';

const USABLE = new Set(['ok', 'unreachable']);

/** The dialog's body: the file, and a list of the configured backends. */
export class BackendChooser extends Widget {
  readonly select: HTMLSelectElement;

  constructor(path: string, backends: Backend[], preferred: string) {
    super();
    this.addClass('jp-ScriptHut-chooser');
    this.select = h('select', { class: 'jp-mod-styled', 'aria-label': 'backend', name: 'backend' });
    for (const b of backends) {
      const note = b.status === 'ok' ? '' : ` (${b.status})`;
      const option = h('option', { value: b.name }, `${b.name} — ${b.type}${note}`);
      option.disabled = !USABLE.has(b.status);
      option.title = b.message ?? '';
      this.select.append(option);
    }
    const usable = backends.filter(b => USABLE.has(b.status)).map(b => b.name);
    this.select.value = usable.includes(preferred) ? preferred : (usable[0] ?? '');
    const hint = h('p', { class: 'jp-ScriptHut-muted' });
    const showHint = () => {
      const chosen = backends.find(b => b.name === this.select.value);
      hint.textContent =
        chosen?.status === 'unreachable'
          ? `${chosen.name} does not answer now: tasks wait until it does. ${chosen.message ?? ''}`
          : (chosen?.message ?? '');
    };
    this.select.addEventListener('change', showHint);
    showHint();
    this.node.append(
      h('p', {}, 'Workflow file: ', h('code', {}, path)),
      h('label', { class: 'jp-ScriptHut-field' }, 'Backend ', this.select),
      hint
    );
  }

  getValue(): string {
    return this.select.value;
  }
}

/** Ask for the backend; null when the user cancels. */
export async function chooseBackend(
  path: string,
  backends: Backend[],
  preferred: string
): Promise<string | null> {
  const body = new BackendChooser(path, backends, preferred);
  const result = await showDialog({
    title: 'Run with ScriptHut',
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run' })],
    focusNodeSelector: 'select'
  });
  return result.button.accept && result.value ? result.value : null;
}
