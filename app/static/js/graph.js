// The run's graph in SVG: dagre places the nodes by level (a layered layout), loop bodies
// as clusters under their loop; edges carry an if's branch. The layout depends on the
// definition only, so it is made once; a run's progress only changes classes and text.

import {graphlib, layout} from "../vendor/layout.js";
import {s} from "./dom.js";

const DETAIL_BOLD = "600 12px system-ui, sans-serif";  // a failure's detail line
const BOLD = "600 13px system-ui, sans-serif";
const SMALL = "12px system-ui, sans-serif";
const NODE_HEIGHT = 60;
const MIN_WIDTH = 190;
const MAX_WIDTH = 260;
const PAD = 12;
const MIN_SCALE = 0.6;

let canvas = null;
function textWidth(text, font) {
  canvas = canvas || document.createElement("canvas").getContext("2d");
  canvas.font = font;
  return canvas.measureText(text).width;
}

/** `text` cut with "…" to fit `width` pixels. */
function fit(text, width, font) {
  if (textWidth(text, font) <= width) return text;
  let cut = text.length;
  while (cut > 1 && textWidth(`${text.slice(0, cut)}…`, font) > width) cut -= 1;
  return `${text.slice(0, cut)}…`;
}

function typeLine(node) {
  const extras = [];
  if (node.maxAttempts) extras.push(`up to ${node.maxAttempts} attempts`);
  if (node.continueOnError) extras.push("continues on error");
  return [node.type, ...extras].join(" · ");
}

export const clusterId = (loop) => `loop:${loop}`;

/** The dagre layout of `nodes` (node id → its shape). */
export function layoutGraph(nodes) {
  const g = new graphlib.Graph({compound: true});
  g.setGraph({rankdir: "TB", nodesep: 26, ranksep: 46, edgesep: 14, marginx: 14, marginy: 14});
  g.setDefaultEdgeLabel(() => ({}));
  for (const [id, node] of Object.entries(nodes)) {
    const wanted = Math.max(textWidth(id, BOLD), textWidth(typeLine(node), SMALL)) + 2 * PAD;
    g.setNode(id, {width: Math.min(MAX_WIDTH, Math.max(MIN_WIDTH, Math.ceil(wanted))),
                   height: NODE_HEIGHT});
  }
  for (const [id, node] of Object.entries(nodes)) {
    if (node.loopBody) g.setNode(clusterId(id), {loop: id});
  }
  for (const [id, node] of Object.entries(nodes)) {
    if (!node.loop) continue;
    g.setParent(id, clusterId(node.loop));
    if (node.loopBody) g.setParent(clusterId(id), clusterId(node.loop));
  }
  for (const [id, node] of Object.entries(nodes)) {
    for (const child of node.children || []) {
      const branch = node.type === "if" && nodes[child] ? nodes[child].branch : null;
      g.setEdge(id, child, branch
        ? {branch, width: textWidth(branch, SMALL) + 12, height: 18, labelpos: "c"}
        : {});
    }
    for (const entry of node.loopBody || []) g.setEdge(id, entry, {body: true});
    if (node.placedAfter && !g.hasEdge(node.placedAfter, id)) {
      g.setEdge(node.placedAfter, id, {hidden: true});
    }
  }
  layout(g);
  return g;
}

/**
 * Draw the layout into `container`: a node is a focusable button (`onSelect(id)` on a
 * click, Enter or Space). Returns the node id → element map the page updates.
 */
export function drawGraph(container, g, onSelect) {
  const {width, height} = g.graph();
  const svg = s("svg", {width: Math.ceil(width), height: Math.ceil(height),
                        viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
                        role: "group", "aria-label": "Workflow graph"});
  svg.append(s("defs", {}, s("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: "auto-start-reverse"}, s("path", {d: "M0 0L10 5L0 10z", class: "arrow"}))));
  const clusters = s("g", {class: "clusters"});
  const edges = s("g", {class: "edges"});
  const labels = s("g", {class: "edge-labels"});
  const boxes = s("g", {class: "nodes"});
  svg.append(clusters, edges, labels, boxes);

  const elements = {nodes: new Map(), clusters: new Map(), edges: []};
  for (const id of g.nodes()) {
    const box = g.node(id);
    if (box.loop !== undefined) {
      const label = s("text", {x: box.x - box.width / 2 + 8, y: box.y - box.height / 2 + 14});
      clusters.append(s("g", {class: "cluster", "data-loop": box.loop},
        s("rect", {x: box.x - box.width / 2, y: box.y - box.height / 2, width: box.width,
                   height: box.height, rx: 10}), label));
      elements.clusters.set(box.loop, label);
    } else {
      const element = nodeElement(id, box, onSelect);
      boxes.append(element);
      elements.nodes.set(id, element);
    }
  }
  for (const edge of g.edges()) {
    const route = g.edge(edge);
    if (route.hidden) continue;
    const points = route.points.map((p) => `${p.x.toFixed(1)} ${p.y.toFixed(1)}`);
    const kind = route.body ? "edge body" : "edge";
    const path = s("g", {class: kind, "data-from": edge.v, "data-to": edge.w},
      s("path", {d: `M${points.join("L")}`, "marker-end": "url(#arrow)"}));
    edges.append(path);
    elements.edges.push({element: path, to: edge.w, branch: route.branch});
    if (route.branch) {
      labels.append(s("g", {class: "edge-label", "data-from": edge.v, "data-to": edge.w},
        s("rect", {x: route.x - route.width / 2, y: route.y - 9, width: route.width,
                   height: 18, rx: 9}),
        s("text", {x: route.x, y: route.y + 4, "text-anchor": "middle"}, route.branch)));
    }
  }
  // A wide graph is drawn smaller to fit its panel, down to MIN_SCALE; past that the
  // panel scrolls.
  svg.style.width = "100%";
  svg.style.maxWidth = `${Math.ceil(width)}px`;
  svg.style.minWidth = `${Math.ceil(width * MIN_SCALE)}px`;
  svg.style.height = "auto";
  container.replaceChildren(svg);
  return elements;
}

function nodeElement(id, box, onSelect) {
  const x = box.x - box.width / 2;
  const y = box.y - box.height / 2;
  const inner = box.width - 2 * PAD;
  const element = s("g", {
    class: "node status-pending", transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`,
    tabindex: 0, role: "button", "aria-pressed": "false", "data-node": id,
    onclick: () => onSelect(id),
    onkeydown: (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(id);
      }
    },
  },
  s("rect", {width: box.width, height: box.height, rx: 8}),
  s("text", {class: "node-id", x: PAD, y: 20}, fit(id, inner, BOLD)),
  s("text", {class: "node-type", x: PAD, y: 37}, ""),
  s("text", {class: "node-detail", x: PAD, y: 53}, ""),
  s("title", {}, id));
  element.dataset.width = box.width;
  return element;
}

/** Set a node's status, type line and detail line (cut to its box). */
export function showNode(element, node, status, detail, label) {
  const inner = Number(element.dataset.width) - 2 * PAD;
  for (const name of [...element.classList]) {
    if (name.startsWith("status-")) element.classList.remove(name);
  }
  element.classList.add(`status-${status}`);
  element.dataset.status = status;
  element.querySelector(".node-type").textContent = fit(typeLine(node), inner, SMALL);
  element.querySelector(".node-detail").textContent =
    fit(detail, inner, status === "failure" ? DETAIL_BOLD : SMALL);
  element.querySelector("title").textContent = label;
  element.setAttribute("aria-label", label);
}
