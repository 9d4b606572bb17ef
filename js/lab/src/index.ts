// ScriptHut's JupyterLab extension: the left-sidebar panel, "Run with ScriptHut" on
// workflow JSON files, and run views in the main area.

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser, IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Widget } from '@lumino/widgets';

import { h } from '../../widgets/components/format';
import { ApiError, ScriptHutClient, describe } from './api';
import { chooseBackend } from './dialog';
import { chooseNotebookRun, notebookDocument } from './notebookrun';
import { OutputsDrive, outputPath } from './outputsdrive';
import { scripthutIcon } from './icons';
import { DEFAULT_SETTINGS, ScriptHutModel } from './model';
import { RunNotices } from './notices';
import { ScriptHutPanel } from './panel';
import { JobsPanel, RunPanel } from './runview';

const PLUGIN_ID = 'scripthut:plugin';

export namespace CommandIDs {
  export const openPanel = 'scripthut:open-panel';
  export const refresh = 'scripthut:refresh';
  export const runFile = 'scripthut:run-file';
  export const runNotebook = 'scripthut:run-notebook';
  export const openRun = 'scripthut:open-run';
  export const cancelRun = 'scripthut:cancel-run';
  export const rerunRun = 'scripthut:rerun-run';
  export const cancelJob = 'scripthut:cancel-job';
  export const openJobs = 'scripthut:open-jobs';
  export const reloadConfig = 'scripthut:reload-config';
  export const openConfigFile = 'scripthut:open-config-file';
  export const notifyRun = 'scripthut:notify-run';
}

/** What the file editor widget `docmanager:open` returns offers (no typing dependency). */
interface EditorWidget {
  context?: { ready: Promise<void> };
  content?: {
    editor?: {
      setCursorPosition(position: { line: number; column: number }): void;
      revealPosition?(position: { line: number; column: number }): void;
      focus?(): void;
    };
  };
}

/** The settings of schema/plugin.json. */
interface Settings {
  refreshInterval: number;
  maxRefreshInterval: number;
  defaultBackend: string;
  showExternalJobs: boolean;
  runsShown: number;
  jobsShown: number;
  jobsHistory: number;
  allUsers: boolean;
  desktopNotifications: boolean;
  titleProgress: boolean;
}

const DEFAULTS: Settings = {
  ...DEFAULT_SETTINGS,
  defaultBackend: '',
  showExternalJobs: true,
  jobsShown: 100,
  desktopNotifications: false,
  titleProgress: true
};

function readSettings(settings: ISettingRegistry.ISettings | null): Settings {
  if (!settings) {
    return { ...DEFAULTS };
  }
  const out = { ...DEFAULTS } as Record<string, unknown>;
  for (const key of Object.keys(DEFAULTS)) {
    const value = settings.get(key).composite;
    if (value !== undefined && value !== null) {
      out[key] = value;
    }
  }
  return out as unknown as Settings;
}

const WORKFLOW_FILE_SELECTOR = '.jp-DirListing-item[data-file-type="json"]';
const NOTEBOOK_FILE_SELECTOR = '.jp-DirListing-item[data-file-type="notebook"]';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'ScriptHut: backends, live jobs and runs; run workflow files on Slurm, PBS, AWS or locally.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ICommandPalette,
    ISettingRegistry,
    IFileBrowserFactory,
    IDefaultFileBrowser
  ],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    browsers: IFileBrowserFactory | null,
    defaultBrowser: IDefaultFileBrowser | null
  ) => {
    const client = new ScriptHutClient(app.serviceManager.serverSettings);
    app.serviceManager.contents.addDrive(new OutputsDrive(client));
    const model = new ScriptHutModel(client);
    let settings: Settings = { ...DEFAULTS };
    let settingsHandle: ISettingRegistry.ISettings | null = null;
    /** The user filter toggle (panel and job table): kept in the settings when there are any. */
    const setAllUsers = (all: boolean): void => {
      if (settingsHandle) {
        void settingsHandle.set('allUsers', all);
      } else {
        apply({ ...settings, allUsers: all });
      }
    };

    const panel = new ScriptHutPanel(
      model,
      {
        openRun: id => void app.commands.execute(CommandIDs.openRun, { id }),
        cancelRun: id => void app.commands.execute(CommandIDs.cancelRun, { id }),
        rerunRun: id => void app.commands.execute(CommandIDs.rerunRun, { id }),
        notifyRun: id => void app.commands.execute(CommandIDs.notifyRun, { id }),
        cancelJob: (backend, jobId) =>
          void app.commands.execute(CommandIDs.cancelJob, { backend, job_id: jobId }),
        openJobs: () => void app.commands.execute(CommandIDs.openJobs),
        refresh: () => void app.commands.execute(CommandIDs.refresh),
        setShowExternal: show => {
          if (settingsHandle) {
            void settingsHandle.set('showExternalJobs', show);
          } else {
            apply({ ...settings, showExternalJobs: show });
          }
        },
        setAllUsers,
        openFile: (path, line) =>
          void app.commands.execute(CommandIDs.openConfigFile, { path, line })
      },
      {
        showExternalJobs: settings.showExternalJobs,
        allUsers: settings.allUsers,
        jobsShown: settings.jobsShown,
        refreshInterval: settings.refreshInterval
      }
    );
    panel.title.icon = scripthutIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, 'scripthut-panel');

    const notices = new RunNotices(model, app.serviceManager.serverSettings.baseUrl);
    notices.openRun = id => void app.commands.execute(CommandIDs.openRun, { id });

    const apply = (next: Settings): void => {
      settings = next;
      notices.configure({
        desktopNotifications: next.desktopNotifications,
        titleProgress: next.titleProgress
      });
      model.configure({
        refreshInterval: next.refreshInterval,
        maxRefreshInterval: next.maxRefreshInterval,
        runsShown: next.runsShown,
        jobsHistory: next.jobsHistory,
        allUsers: next.allUsers
      });
      panel.configure({
        showExternalJobs: next.showExternalJobs,
        allUsers: next.allUsers,
        jobsShown: next.jobsShown,
        refreshInterval: next.refreshInterval
      });
    };
    if (registry) {
      registry
        .load(PLUGIN_ID)
        .then(loaded => {
          settingsHandle = loaded;
          apply(readSettings(loaded));
          loaded.changed.connect(() => apply(readSettings(loaded)));
        })
        .catch(error => console.warn('ScriptHut: settings not loaded', error));
    }

    // -- main-area views ------------------------------------------------------------

    const runs = new WidgetTracker<MainAreaWidget<RunPanel>>({ namespace: 'scripthut-run' });
    const jobs = new WidgetTracker<MainAreaWidget<JobsPanel>>({ namespace: 'scripthut-jobs' });
    if (restorer) {
      void restorer.restore(runs, {
        command: CommandIDs.openRun,
        args: w => ({ id: w.content.runId, task: w.content.selectedTask }),
        name: w => w.content.runId
      });
      void restorer.restore(jobs, { command: CommandIDs.openJobs, name: () => 'jobs' });
    }

    const failed = (title: string, error: unknown): void => {
      void showDialog({
        title,
        body: new Widget({ node: h('pre', { class: 'jp-ScriptHut-error' }, describe(error)) }),
        buttons: [Dialog.okButton()]
      });
    };

    // -- commands -------------------------------------------------------------------

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Show ScriptHut Panel',
      caption: 'Backends, live jobs and runs',
      icon: scripthutIcon,
      execute: () => app.shell.activateById(panel.id)
    });

    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh ScriptHut',
      execute: () => model.refresh()
    });

    app.commands.addCommand(CommandIDs.reloadConfig, {
      label: 'Reload ScriptHut Configuration',
      caption: 'Read scripthut.yaml (global and project) again, without a restart',
      execute: async () => {
        try {
          const outcome = await client.reloadConfig();
          if (outcome.status === 'ok') {
            Notification.success('ScriptHut: configuration reloaded', { autoClose: 3000 });
          } else {
            Notification.warning(
              `ScriptHut kept its running configuration: ${outcome.errors.length} problem(s)`,
              { autoClose: 5000 }
            );
          }
        } catch (error) {
          failed('Reload failed', error);
        }
        await model.refresh();
      }
    });

    app.commands.addCommand(CommandIDs.openConfigFile, {
      label: 'Open a ScriptHut Configuration File at a Line',
      execute: async args => {
        const path = String(args.path ?? '');
        const line = Math.max(1, Number(args.line ?? 1) || 1);
        const widget = (await app.commands.execute('docmanager:open', {
          path,
          factory: 'Editor'
        })) as EditorWidget | undefined;
        await widget?.context?.ready;
        const editor = widget?.content?.editor;
        if (editor) {
          const position = { line: line - 1, column: 0 };
          editor.setCursorPosition(position);
          editor.revealPosition?.(position);
          editor.focus?.();
        }
        return widget;
      }
    });

    app.commands.addCommand(CommandIDs.openRun, {
      label: args => (args.id ? `Open ScriptHut Run ${args.id}` : 'Open ScriptHut Run'),
      execute: args => {
        const id = String(args.id ?? '');
        if (!id) {
          return;
        }
        const existing = runs.find(w => w.content.runId === id || w.content.runId.startsWith(id));
        if (existing) {
          app.shell.activateById(existing.id);
          if (args.task) {
            existing.content.reload();
          }
          return existing;
        }
        const content = new RunPanel(model, id, String(args.task ?? ''), (run, task, attempt, path) =>
          void app.commands.execute('docmanager:open', {
            path: outputPath(run, task, attempt, path),
            factory: 'Notebook'
          })
        );
        const widget = new MainAreaWidget({ content });
        widget.id = `scripthut-run-${id}`;
        widget.title.icon = scripthutIcon;
        widget.title.closable = true;
        content.title.changed.connect(() => {
          widget.title.label = content.title.label;
          widget.title.caption = content.title.caption;
        });
        widget.title.label = content.title.label;
        void runs.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    app.commands.addCommand(CommandIDs.openJobs, {
      label: 'Open ScriptHut Job Table',
      icon: scripthutIcon,
      execute: () => {
        const existing = jobs.currentWidget;
        if (existing && !existing.isDisposed) {
          app.shell.activateById(existing.id);
          return existing;
        }
        const widget = new MainAreaWidget({ content: new JobsPanel(model, setAllUsers) });
        widget.id = 'scripthut-jobs-main';
        widget.title.label = 'ScriptHut jobs';
        widget.title.icon = scripthutIcon;
        widget.title.closable = true;
        void jobs.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    app.commands.addCommand(CommandIDs.cancelRun, {
      label: 'Cancel ScriptHut Run',
      execute: async args => {
        const id = String(args.id ?? '');
        if (!id) {
          return;
        }
        const answer = await showDialog({
          title: 'Cancel run?',
          body: `Run ${id}: pending tasks will not start and the jobs of running tasks are cancelled.`,
          buttons: [
            Dialog.cancelButton({ label: 'Keep running' }),
            Dialog.warnButton({ label: 'Cancel run' })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          await client.cancelRun(id);
        } catch (error) {
          failed('Cancel run', error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.notifyRun, {
      label: 'Notify Me When the ScriptHut Run Ends',
      execute: async args => {
        const id = String(args.id ?? '');
        if (!id) {
          return;
        }
        try {
          const reply = await client.notifyRun(id);
          if (reply.configured) {
            Notification.info(`Run ${id}: you will be notified when it ends`, {
              autoClose: 4000
            });
          } else {
            Notification.warning(
              `Run ${id}: no email or webhook is configured (notifications: in scripthut.yaml)`,
              { autoClose: 8000 }
            );
          }
        } catch (error) {
          failed('Notify', error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.rerunRun, {
      label: 'Rerun Failed Tasks of ScriptHut Run',
      execute: async args => {
        const id = String(args.id ?? '');
        if (!id) {
          return;
        }
        try {
          await client.rerunRun(id);
          Notification.info(`Run ${id}: failed and cancelled tasks start again`, {
            autoClose: 4000
          });
        } catch (error) {
          failed('Rerun', error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.cancelJob, {
      label: 'Cancel Job',
      execute: async args => {
        const backend = String(args.backend ?? '');
        const jobId = String(args.job_id ?? '');
        if (!backend || !jobId) {
          return;
        }
        const answer = await showDialog({
          title: 'Cancel job?',
          body: `Job ${jobId} on ${backend}.`,
          buttons: [
            Dialog.cancelButton({ label: 'Keep it' }),
            Dialog.warnButton({ label: 'Cancel job' })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          await client.cancelJob(backend, jobId);
        } catch (error) {
          failed('Cancel job', error);
        }
      }
    });

    /** The workflow file the command is about: args, the file browser's selection, the open document. */
    const targetPath = async (
      args: Record<string, unknown>,
      pattern = /\.json$/i
    ): Promise<string | null> => {
      if (typeof args.path === 'string' && args.path) {
        return args.path;
      }
      const browser = browsers?.tracker.currentWidget ?? defaultBrowser;
      const chosen = browser
        ? Array.from(browser.selectedItems()).find(
            i => i.type !== 'directory' && pattern.test(i.name)
          )
        : undefined;
      if (chosen) {
        return chosen.path;
      }
      const current = app.shell.currentWidget as unknown as { context?: { path?: string } } | null;
      const open = current?.context?.path;
      if (open && pattern.test(open)) {
        return open;
      }
      const asked = await InputDialog.getText({
        title: 'Run with ScriptHut',
        label: `${pattern.source.includes('ipynb') ? 'Notebook' : 'Workflow JSON file'} (relative to the server root)`,
        placeholder: pattern.source.includes('ipynb') ? 'fit.ipynb' : 'flows/sweep.json'
      });
      return asked.button.accept && asked.value ? asked.value : null;
    };

    app.commands.addCommand(CommandIDs.runFile, {
      label: 'Run with ScriptHut',
      caption: 'Start a run of this workflow JSON file on a backend you choose',
      icon: scripthutIcon,
      execute: async args => {
        const picked = await targetPath(args);
        if (!picked) {
          return;
        }
        const path = app.serviceManager.contents.localPath(picked);
        let backends;
        try {
          backends = await client.backends();
        } catch (error) {
          const text =
            error instanceof ApiError && error.status === 404
              ? 'The ScriptHut server extension is not running on this Jupyter server.'
              : error;
          failed('Run with ScriptHut', text);
          return;
        }
        let backend = typeof args.backend === 'string' ? args.backend : '';
        if (!backend) {
          const preferred = settings.defaultBackend || backends.default || '';
          const chosen = await chooseBackend(path, backends.backends, preferred);
          if (!chosen) {
            return;
          }
          backend = chosen;
        }
        try {
          const run = await client.submitFile(path, backend);
          Notification.success(`Started run ${run.name || run.id} on ${run.backend}`, {
            autoClose: 5000,
            actions: [
              {
                label: 'Open',
                callback: () => void app.commands.execute(CommandIDs.openRun, { id: run.id })
              }
            ]
          });
          if (!model.live) {
            void model.refresh(); // the stream would have told the panel
          }
          return run;
        } catch (error) {
          failed(`Cannot run ${path}`, error);
        }
      }
    });

    app.contextMenu.addItem({
      command: CommandIDs.runFile,
      selector: WORKFLOW_FILE_SELECTOR,
      rank: 3
    });

    app.commands.addCommand(CommandIDs.runNotebook, {
      label: 'Run with ScriptHut',
      caption: 'Run this notebook as a task (or a sweep of tasks) on a backend you choose',
      icon: scripthutIcon,
      execute: async args => {
        const picked = await targetPath(args, /\.ipynb$/i);
        if (!picked) {
          return;
        }
        const path = app.serviceManager.contents.localPath(picked);
        try {
          const [file, backends] = await Promise.all([
            app.serviceManager.contents.get(picked, { content: true }),
            client.backends()
          ]);
          const preferred = settings.defaultBackend || backends.default || '';
          const choice = await chooseNotebookRun(path, file.content, backends.backends, preferred);
          if (!choice) {
            return;
          }
          const run = await client.submitDocument(notebookDocument(path, choice), choice.backend);
          Notification.success(`Started run ${run.name || run.id} on ${run.backend}`, {
            autoClose: 5000,
            actions: [
              {
                label: 'Open',
                callback: () => void app.commands.execute(CommandIDs.openRun, { id: run.id })
              }
            ]
          });
          if (!model.live) {
            void model.refresh();
          }
          return run;
        } catch (error) {
          failed(`Cannot run ${path}`, error);
        }
      }
    });
    app.contextMenu.addItem({
      command: CommandIDs.runNotebook,
      selector: NOTEBOOK_FILE_SELECTOR,
      rank: 3
    });

    if (palette) {
      const category = 'ScriptHut';
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.runFile,
        CommandIDs.openJobs,
        CommandIDs.refresh,
        CommandIDs.reloadConfig
      ]) {
        palette.addItem({ command, category });
      }
    }
  }
};

export default plugin;
