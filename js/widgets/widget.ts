// The anywidget adapter: one DataStore per widget model, fed by the `_snapshot` trait and
// `patch` messages, and thin `render` functions that mount the components.
// Named exports re-export the components for pages that use them without a kernel.

import type { AnyModel, Initialize, Render } from "@anywidget/types";
import { ChannelApi, RestApi, ScriptHutApi } from "./components/api";
import { createCostView } from "./components/costview";
import { createJobTable, JobFilters } from "./components/jobtable";
import { createRunView } from "./components/runview";
import { DataStore, PatchMessage, Row, SnapshotMessage } from "./components/store";
import { createTimeline } from "./components/timeline";
import "./styles.css";

export * from "./components/index";

interface Model {
  _kind: string;
  _snapshot: SnapshotMessage;
  api_base: string;
  filters: JobFilters;
  all_users: boolean;
  selected_task: string;
  run_id: string;
}

interface Reply {
  type: "reply";
  id: number;
  ok: boolean;
  data?: unknown;
  error?: string;
}

const REQUEST_TIMEOUT_MS = 60_000;

class Session {
  readonly store = new DataStore();
  readonly api: ScriptHutApi;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private resyncAsked = false;

  constructor(private readonly model: AnyModel<Model>) {
    const kernel = new ChannelApi((op, args) => this.request(op, args));
    const base = model.get("api_base");
    this.api = base ? new RestApi(base, kernel) : kernel;
  }

  request(op: string, args: Row): Promise<any> {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`no answer from the kernel to '${op}' (is it busy?)`));
      }, REQUEST_TIMEOUT_MS);
      this.waiting.set(id, {
        resolve: (value) => {
          window.clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          window.clearTimeout(timer);
          reject(error);
        },
      });
      this.model.send({ type: "request", id, op, args });
    });
  }

  snapshot = (): void => {
    const message = this.model.get("_snapshot");
    if (message && this.store.loadSnapshot(message)) {
      this.resyncAsked = false;
      this.model.send({ type: "ready", seq: this.store.seq });
    }
  };

  message = (message: PatchMessage | Reply): void => {
    if (message?.type === "patch") {
      if (this.store.applyPatch(message) === "gap" && this.store.loaded && !this.resyncAsked) {
        this.resyncAsked = true;
        this.model.send({ type: "resync" });
      }
    } else if (message?.type === "reply") {
      const waiter = this.waiting.get(message.id);
      if (!waiter) return;
      this.waiting.delete(message.id);
      if (message.ok) waiter.resolve(message.data);
      else waiter.reject(new Error(message.error ?? "request failed"));
    }
  };
}

const sessions = new WeakMap<AnyModel<Model>, Session>();

function session(model: AnyModel<Model>): Session {
  let found = sessions.get(model);
  if (!found) {
    found = new Session(model);
    sessions.set(model, found);
    model.on("change:_snapshot", found.snapshot);
    model.on("msg:custom", found.message);
    found.snapshot();
  }
  return found;
}

const initialize: Initialize<Model> = ({ model }) => {
  session(model);
};

const render: Render<Model> = ({ model, el }) => {
  const { store, api } = session(model);
  const root = document.createElement("div");
  root.className = "sh-root";
  el.append(root);
  const kind = model.get("_kind");
  let destroy: () => void;
  if (kind === "jobtable") {
    const view = createJobTable(root, store, {
      api,
      filters: model.get("filters"),
      onFiltersChange: (filters) => {
        model.set("filters", filters);
        model.save_changes();
      },
      // The kernel reads the jobs again when the trait changes.
      allUsers: model.get("all_users"),
      onAllUsersChange: (allUsers) => {
        model.set("all_users", allUsers);
        model.save_changes();
      },
    });
    const fromPython = () => view.setFilters(model.get("filters"));
    const allUsersFromPython = () => view.setAllUsers(model.get("all_users"));
    model.on("change:filters", fromPython);
    model.on("change:all_users", allUsersFromPython);
    destroy = () => {
      model.off("change:filters", fromPython);
      model.off("change:all_users", allUsersFromPython);
      view.destroy();
    };
  } else if (kind === "runview") {
    const view = createRunView(root, store, {
      api,
      selected: model.get("selected_task") || undefined,
      onSelect: (taskId) => {
        if (model.get("selected_task") !== taskId) {
          model.set("selected_task", taskId);
          model.save_changes();
        }
      },
    });
    const fromPython = () => {
      const wanted = model.get("selected_task");
      if (wanted) view.select(wanted);
    };
    model.on("change:selected_task", fromPython);
    destroy = () => {
      model.off("change:selected_task", fromPython);
      view.destroy();
    };
  } else if (kind === "timeline") {
    destroy = createTimeline(root, store).destroy;
  } else if (kind === "cost") {
    destroy = createCostView(root, store).destroy;
  } else {
    root.textContent = `unknown ScriptHut widget '${kind}'`;
    destroy = () => undefined;
  }
  return () => {
    destroy();
    root.remove();
  };
};

export default { initialize, render };
