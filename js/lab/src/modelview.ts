// A main-area or sidebar view of model data: it tells the model while it is visible, and the
// model streams only while some view is interested.

import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import type { ScriptHutModel } from './model';

/** Shows model data while visible: tells the model, which streams only while someone does. */
export abstract class ModelView extends Widget {
  constructor(protected readonly model: ScriptHutModel) {
    super();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setInterest(this, true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setInterest(this, false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.setInterest(this, true);
    }
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.setInterest(this, false);
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    if (!this.isDisposed) {
      this.model.setInterest(this, false);
    }
    super.dispose();
  }
}
