// A stacked progress bar with one segment per task state, and a legend of the counts.

import { STATES, h, stateColor } from "./format";

export interface ProgressView {
  readonly el: HTMLElement;
  update(counts: Record<string, number>, total?: number): void;
}

export function createProgress(): ProgressView {
  const bar = h("div", { class: "sh-progress-bar", role: "progressbar", "aria-valuemin": 0 });
  const legend = h("div", { class: "sh-legend" });
  const el = h("div", { class: "sh-progress" }, bar, legend);
  return {
    el,
    update(counts, total) {
      const sum = total ?? Object.values(counts).reduce((a, b) => a + (b || 0), 0);
      const done = counts.completed ?? 0;
      bar.setAttribute("aria-valuemax", String(sum));
      bar.setAttribute("aria-valuenow", String(done));
      const segments = STATES.filter((s) => counts[s]).map((state) => {
        const part = h("div", { class: `sh-seg sh-state-${state}`, title: `${counts[state]} ${state}` });
        part.style.width = `${sum ? (100 * counts[state]) / sum : 0}%`;
        part.style.background = stateColor(state);
        return part;
      });
      bar.replaceChildren(...segments);
      legend.replaceChildren(
        h("span", { class: "sh-legend-total" }, `${done} / ${sum} done`),
        ...STATES.filter((s) => counts[s]).map((state) => {
          const dot = h("span", { class: "sh-dot" });
          dot.style.background = stateColor(state);
          return h(
            "span",
            { class: "sh-legend-item", "data-state": state },
            dot,
            `${counts[state]} ${state.replace("_", " ")}`,
          );
        }),
      );
    },
  };
}
