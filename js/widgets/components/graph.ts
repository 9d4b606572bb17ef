// Draws a unit graph (tasks and collapsed groups) as SVG, laid out by dagre.
// Layout runs only when the set of nodes or edges changes; a state change recolours.

import dagre from "@dagrejs/dagre";
import type { Unit, UnitGraph } from "./dag";
import { STATES, countsText, h, stateColor, svg } from "./format";

export interface GraphOptions {
  onUnitClick: (unit: Unit) => void;
  direction?: "LR" | "TB";
}

export interface GraphView {
  readonly el: HTMLElement;
  draw(graph: UnitGraph): void; // new layout
  recolor(graph: UnitGraph): void; // same nodes and edges, new states
  select(unitId: string | null): void;
  destroy(): void;
}

const CHAR_WIDTH = 7;
const TASK_HEIGHT = 28;
const GROUP_HEIGHT = 40;
const MIN_SCALE = 0.45;
const PANEL_HEIGHT = 460; // .sh-graph max-height
const BOTH_WAYS_LIMIT = 150; // nodes: above it, one layout only
let markers = 0;

const MAX_WIDTH = 260;

// Width of a group's "done/total" count at its widest.
function countWidth(unit: Unit): number {
  return (2 * String(unit.members.length).length + 1) * CHAR_WIDTH;
}

// Room for the label plus the dot (tasks) or the done/total count (groups).
function nodeWidth(unit: Unit): number {
  const extra = unit.group ? countWidth(unit) + 28 : 32;
  return Math.max(56, Math.min(MAX_WIDTH, unit.label.length * CHAR_WIDTH + extra));
}

// `text` cut with an ellipsis to fit `room` pixels.
function clip(text: string, room: number): string {
  const fits = Math.floor(room / CHAR_WIDTH);
  return text.length <= fits ? text : text.slice(0, Math.max(1, fits - 1)) + "…";
}

export function createGraph(options: GraphOptions): GraphView {
  const markerId = `sh-arrow-${++markers}`;
  const el = h("div", { class: "sh-graph" });
  let canvas: SVGSVGElement | null = null;
  let selected: string | null = null;
  const nodes = new Map<string, SVGGElement>();
  let current: UnitGraph | null = null;

  const fillGroup = (g: SVGGElement, unit: Unit, width: number) => {
    const bar = g.querySelector(".sh-node-bar") as SVGGElement;
    bar.replaceChildren();
    const total = unit.members.length;
    let x = 8;
    const inner = width - 16;
    for (const state of STATES) {
      const n = unit.counts[state];
      if (!n) continue;
      const w = (inner * n) / total;
      bar.append(svg("rect", { x, y: GROUP_HEIGHT - 12, width: Math.max(w, 0.5), height: 5, fill: stateColor(state) }));
      x += w;
    }
    const done = unit.counts.completed ?? 0;
    (g.querySelector(".sh-node-count") as SVGTextElement).textContent = `${done}/${total}`;
  };

  const paint = (unit: Unit) => {
    const g = nodes.get(unit.id);
    if (!g) return;
    g.setAttribute("class", `sh-node sh-state-${unit.state}${unit.group ? " sh-group" : ""}${unit.id === selected ? " sh-selected" : ""}`);
    g.dataset.state = unit.state;
    const rect = g.querySelector("rect.sh-node-box") as SVGRectElement;
    rect.setAttribute("stroke", stateColor(unit.state));
    const title = g.querySelector("title") as Element;
    title.textContent = unit.group
      ? `${unit.label}: ${unit.members.length} tasks — ${countsText(unit.counts)} (click to open)`
      : `${unit.label}: ${unit.state}`;
    if (unit.group) fillGroup(g, unit, Number(rect.getAttribute("width")));
    else (g.querySelector(".sh-node-dot") as SVGCircleElement).setAttribute("fill", stateColor(unit.state));
  };

  const laidOut = (graph: UnitGraph, direction: "LR" | "TB") => {
    const layout = new dagre.graphlib.Graph();
    layout.setGraph({ rankdir: direction, nodesep: 12, ranksep: 40, marginx: 8, marginy: 8 });
    layout.setDefaultEdgeLabel(() => ({}));
    for (const unit of graph.units.values()) {
      layout.setNode(unit.id, { width: nodeWidth(unit), height: unit.group ? GROUP_HEIGHT : TASK_HEIGHT });
    }
    for (const [from, to] of graph.edges) layout.setEdge(from, to);
    dagre.layout(layout);
    return layout;
  };

  // Left to right reads like a pipeline; a wide fan-out fits the panel better top down.
  // Without a fixed direction, small graphs are laid out both ways and the one that needs
  // the least shrinking to fit the panel wins.
  const bestLayout = (graph: UnitGraph) => {
    if (options.direction) return laidOut(graph, options.direction);
    const room = { width: el.clientWidth || 900, height: PANEL_HEIGHT };
    const shrink = (layout: ReturnType<typeof laidOut>) => {
      const size = layout.graph();
      return Math.max((size.width ?? 0) / room.width, (size.height ?? 0) / room.height, 1);
    };
    const across = laidOut(graph, "LR");
    if (graph.units.size > BOTH_WAYS_LIMIT || shrink(across) === 1) return across;
    const down = laidOut(graph, "TB");
    return shrink(down) < shrink(across) ? down : across;
  };

  const draw = (graph: UnitGraph) => {
    current = graph;
    const layout = bestLayout(graph);
    const size = layout.graph();
    const width = Math.ceil(size.width ?? 0);
    const height = Math.ceil(size.height ?? 0);

    const root = svg("svg", { class: "sh-dag", viewBox: `0 0 ${width} ${height}`, role: "img" });
    root.dataset.width = String(width);
    const defs = svg("defs");
    const marker = svg("marker", {
      id: markerId,
      viewBox: "0 0 10 10",
      refX: 9,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: "auto-start-reverse",
    });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "sh-arrow" }));
    defs.append(marker);
    root.append(defs);

    const edgeLayer = svg("g", { class: "sh-edges" });
    for (const edge of layout.edges()) {
      const points: Array<{ x: number; y: number }> = layout.edge(edge).points ?? [];
      if (!points.length) continue;
      const d = points.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
      const path = svg("path", { d, class: "sh-edge", "marker-end": `url(#${markerId})` });
      path.dataset.from = edge.v;
      path.dataset.to = edge.w;
      edgeLayer.append(path);
    }
    root.append(edgeLayer);

    nodes.clear();
    const nodeLayer = svg("g", { class: "sh-nodes" });
    for (const unit of graph.units.values()) {
      const box = layout.node(unit.id);
      const w = box.width;
      const hgt = box.height;
      const g = svg("g", { transform: `translate(${(box.x ?? 0) - w / 2},${(box.y ?? 0) - hgt / 2})` });
      g.dataset.unit = unit.id;
      if (!unit.group) g.dataset.taskId = unit.id;
      g.append(svg("title"));
      g.append(svg("rect", { class: "sh-node-box", width: w, height: hgt, rx: 6, ry: 6 }));
      if (unit.group) {
        const label = svg("text", { x: 8, y: 16, class: "sh-node-label" });
        label.textContent = clip(unit.label, w - countWidth(unit) - 24);
        const countText = svg("text", { x: w - 8, y: 16, class: "sh-node-count", "text-anchor": "end" });
        g.append(label, countText, svg("g", { class: "sh-node-bar" }));
      } else {
        g.append(svg("circle", { class: "sh-node-dot", cx: 11, cy: hgt / 2, r: 4 }));
        const label = svg("text", { x: 20, y: hgt / 2 + 4, class: "sh-node-label" });
        label.textContent = clip(unit.label, w - 26);
        g.append(label);
      }
      nodes.set(unit.id, g);
      nodeLayer.append(g);
    }
    root.append(nodeLayer);
    root.addEventListener("click", (event) => {
      const target = (event.target as Element).closest("[data-unit]") as SVGGElement | null;
      const unit = target ? current?.units.get(target.dataset.unit ?? "") : undefined;
      if (unit) options.onUnitClick(unit);
    });

    canvas?.remove();
    canvas = root;
    el.append(root);
    fit();
    for (const unit of graph.units.values()) paint(unit);
  };

  // Shrink a wide graph to the panel (down to MIN_SCALE), scroll beyond that.
  const fit = () => {
    if (!canvas) return;
    const natural = Number(canvas.dataset.width) || 1;
    const [, , , vh] = (canvas.getAttribute("viewBox") ?? "0 0 1 1").split(" ").map(Number);
    const room = el.clientWidth || natural;
    const scale = Math.max(MIN_SCALE, Math.min(1, room / natural));
    canvas.setAttribute("width", String(Math.round(natural * scale)));
    canvas.setAttribute("height", String(Math.round(vh * scale)));
  };

  const resize = new ResizeObserver(() => fit());
  resize.observe(el);

  return {
    el,
    draw,
    recolor(graph: UnitGraph) {
      current = graph;
      for (const unit of graph.units.values()) paint(unit);
    },
    select(unitId: string | null) {
      const previous = selected;
      selected = unitId;
      for (const id of [previous, unitId]) {
        const unit = id ? current?.units.get(id) : undefined;
        if (unit) paint(unit);
      }
    },
    destroy() {
      resize.disconnect();
      el.remove();
    },
  };
}
