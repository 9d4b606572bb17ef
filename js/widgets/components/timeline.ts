// A Gantt view of task start and end, one band per backend; concurrent tasks stack in
// lanes. Drawn on a canvas so thousands of bars stay cheap; hover shows the task.

import { clock, duration, h, stateColor, thousands } from "./format";
import { DataStore, Row, frameThrottle } from "./store";

export interface TimelineOptions {
  table?: string;
  laneHeight?: number;
  maxHeight?: number;
  onBarClick?: (bar: Row) => void;
}

export interface TimelineView {
  destroy(): void;
}

interface Placed {
  row: Row;
  x0: number;
  x1: number;
  y: number;
}

const LABEL_WIDTH = 110;
const AXIS_HEIGHT = 22;
const BAND_GAP = 8;

function niceStep(seconds: number): number {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
  return steps.find((s) => seconds / s <= 8) ?? 86400 * Math.ceil(seconds / 86400 / 8);
}

// Greedy lane packing: each bar goes to the first lane free at its start.
export function packLanes(bars: Array<{ start: number; end: number }>): number[] {
  const order = bars.map((_, i) => i).sort((a, b) => bars[a].start - bars[b].start);
  const laneEnds: number[] = [];
  const lanes = new Array<number>(bars.length);
  for (const i of order) {
    let lane = laneEnds.findIndex((end) => end <= bars[i].start);
    if (lane < 0) {
      lane = laneEnds.length;
      laneEnds.push(0);
    }
    laneEnds[lane] = bars[i].end;
    lanes[i] = lane;
  }
  return lanes;
}

export function createTimeline(el: HTMLElement, store: DataStore, options: TimelineOptions = {}): TimelineView {
  const tableName = options.table ?? "bars";
  const laneHeight = options.laneHeight ?? 12;
  const canvas = h("canvas", { class: "sh-timeline-canvas" });
  const tip = h("div", { class: "sh-tip", hidden: true });
  const summary = h("div", { class: "sh-timeline-summary" });
  const scroller = h("div", { class: "sh-timeline-scroll" }, canvas, tip);
  scroller.style.maxHeight = `${options.maxHeight ?? 420}px`;
  const root = h("div", { class: "sh-timeline" }, summary, scroller);
  el.append(root);
  let placed: Placed[] = [];

  const draw = () => {
    const rows = store.rows(tableName).filter((r) => typeof r.started_at === "number");
    const now = Date.now() / 1000;
    root.dataset.bars = String(rows.length);
    const width = Math.max(320, scroller.clientWidth || el.clientWidth || 640);
    if (!rows.length) {
      summary.textContent = "No task has started yet.";
      canvas.width = 0;
      canvas.height = 0;
      placed = [];
      return;
    }
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const r of rows) {
      t0 = Math.min(t0, r.started_at as number);
      t1 = Math.max(t1, typeof r.ended_at === "number" ? r.ended_at : now);
    }
    t1 = Math.max(t1, t0 + 1);
    const plotWidth = width - LABEL_WIDTH - 8;
    const x = (t: number) => LABEL_WIDTH + ((t - t0) / (t1 - t0)) * plotWidth;

    const backends = Array.from(new Set(rows.map((r) => String(r.backend)))).sort();
    const bands: Array<{ backend: string; top: number; lanes: number }> = [];
    placed = [];
    let top = AXIS_HEIGHT;
    for (const backend of backends) {
      const mine = rows.filter((r) => String(r.backend) === backend);
      const spans = mine.map((r) => ({ start: r.started_at as number, end: typeof r.ended_at === "number" ? r.ended_at : now }));
      const lanes = packLanes(spans);
      const count = lanes.reduce((most, lane) => Math.max(most, lane + 1), 1);
      mine.forEach((row, i) => {
        placed.push({ row, x0: x(spans[i].start), x1: Math.max(x(spans[i].end), x(spans[i].start) + 1), y: top + lanes[i] * laneHeight });
      });
      bands.push({ backend, top, lanes: count });
      top += count * laneHeight + BAND_GAP;
    }

    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(top * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${top}px`;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, top);
    const style = getComputedStyle(root);
    const ink = style.color || "#333";
    ctx.font = `11px ${style.fontFamily || "sans-serif"}`;
    ctx.fillStyle = ink;
    ctx.strokeStyle = ink;
    ctx.globalAlpha = 0.25;
    const step = niceStep(t1 - t0);
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      ctx.beginPath();
      ctx.moveTo(x(t) + 0.5, AXIS_HEIGHT - 4);
      ctx.lineTo(x(t) + 0.5, top);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ctx.fillText(clock(t), x(t) + 2, 12);
    for (const band of bands) {
      ctx.fillStyle = ink;
      ctx.fillText(band.backend, 4, band.top + Math.min(band.lanes * laneHeight, laneHeight) - 2);
      ctx.globalAlpha = 0.06;
      ctx.fillRect(LABEL_WIDTH, band.top, plotWidth, band.lanes * laneHeight);
      ctx.globalAlpha = 1;
    }
    for (const bar of placed) {
      ctx.fillStyle = stateColor(bar.row.state);
      ctx.fillRect(bar.x0, bar.y + 1, bar.x1 - bar.x0, laneHeight - 2);
    }
    const running = rows.filter((r) => typeof r.ended_at !== "number").length;
    summary.textContent =
      `${thousands(rows.length)} tasks on ${backends.length} backend${backends.length === 1 ? "" : "s"}, ` +
      `${clock(t0)} to ${running ? "now" : clock(t1)} (${duration(t1 - t0)})` +
      (running ? `, ${running} running` : "");
  };

  const update = frameThrottle(draw);
  const unsubscribe = store.subscribe(() => update());
  const ticker = window.setInterval(() => {
    if (store.rows(tableName).some((r) => typeof r.started_at === "number" && typeof r.ended_at !== "number")) update();
  }, 1000);
  const resize = new ResizeObserver(() => update());
  resize.observe(scroller);

  const barAt = (event: MouseEvent): Placed | undefined => {
    const box = canvas.getBoundingClientRect();
    const px = event.clientX - box.left;
    const py = event.clientY - box.top;
    return placed.find((b) => px >= b.x0 - 1 && px <= b.x1 + 1 && py >= b.y && py < b.y + laneHeight);
  };
  canvas.addEventListener("mousemove", (event) => {
    const bar = barAt(event);
    if (!bar) {
      tip.hidden = true;
      return;
    }
    const r = bar.row;
    const end = typeof r.ended_at === "number" ? r.ended_at : null;
    tip.textContent = `${r.task} (${r.run}) · ${r.state} · ${clock(r.started_at)} – ${end ? clock(end) : "running"} · ${duration((end ?? Date.now() / 1000) - r.started_at)}`;
    tip.hidden = false;
    tip.style.left = `${Math.min(bar.x0, scroller.clientWidth - 260)}px`;
    tip.style.top = `${bar.y + laneHeight + 2}px`;
  });
  canvas.addEventListener("mouseleave", () => (tip.hidden = true));
  canvas.addEventListener("click", (event) => {
    const bar = barAt(event);
    if (bar) options.onBarClick?.(bar.row);
  });

  if (store.loaded) draw();
  return {
    destroy() {
      unsubscribe();
      update.cancel();
      window.clearInterval(ticker);
      resize.disconnect();
      root.remove();
    },
  };
}
