// The run page (GET /runs/<runId>): the run's graph, its timeline and the selected node,
// read from the API with the token; a run in flight is followed through its stream (SPEC
// §12), or by reading it again every second when the stream is refused.

import {api, events} from "./api.js";
import {showDetails} from "./details.js";
import {badge, clock, duration, h} from "./dom.js";
import {drawGraph, layoutGraph, showNode} from "./graph.js";
import {
  applyEvent, detailLine, entryId, entryOf, graphFromState, iterationCount, loopsAround,
  parseEntryId,
} from "./run-model.js";
import {drawTimeline} from "./timeline.js";

const runId = decodeURIComponent(location.pathname.split("/").pop());
const base = `/v1/runs/${encodeURIComponent(runId)}`;
const $ = (id) => document.getElementById(id);

const page = {
  graph: null,  // GET …/graph: startedAt, deadlineMs, nodes
  nodes: {},  // node id → its shape
  run: null,  // the run as last read or followed
  readAt: 0,  // performance.now() when the run's durationMs was read
  elements: null,  // what drawGraph made
  chosen: {},  // loop id → the iteration shown
  pinned: new Set(),  // loops whose iteration a person chose (others follow the newest)
  selected: null,  // the node id shown in the details
  shown: null,  // [entry id, entry] in the details now
  pending: false,  // a render is scheduled
};

function setRun(run) {
  page.run = {...run, executionState: run.executionState || {}};
  page.readAt = performance.now();
}

function elapsed() {
  const run = page.run;
  if (run.status !== "running") return run.durationMs || 0;
  return (run.durationMs || 0) + (performance.now() - page.readAt);
}

/** Render on the next frame, once however many events came meanwhile. */
function schedule() {
  if (page.pending) return;
  page.pending = true;
  requestAnimationFrame(() => {
    page.pending = false;
    render();
  });
}

function render() {
  const state = page.run.executionState;
  if (page.run.status === "running") followNewestIterations(state);
  renderHead();
  renderLoops(state);
  renderNodes(state);
  renderDetails(state);
  renderTimeline();
}

function followNewestIterations(state) {
  for (const [id, node] of Object.entries(page.nodes)) {
    if (!node.loopBody || page.pinned.has(id)) continue;
    page.chosen[id] = Math.max(0, iterationCount(page.nodes, state, id, page.chosen) - 1);
  }
}

function renderHead() {
  const run = page.run;
  const took = run.status === "running" ? `running for ${duration(elapsed())}`
    : `took ${duration(run.durationMs)}`;
  $("run-status").replaceChildren(badge(run.status), ` ${took}`);
  const facts = [
    ["Started", clock(page.graph.startedAt)],
    ["Deadline", page.graph.deadlineMs ? duration(page.graph.deadlineMs) : "—"],
    ["Compute units", run.totalCu ?? "—"],
    ["Nodes", Object.keys(page.nodes).length],
  ];
  $("run-facts").replaceChildren(...facts.map(([name, value]) =>
    h("div", {}, h("dt", {}, name), h("dd", {}, value))));
  const error = $("run-error");
  error.hidden = !run.error;
  if (run.error) error.replaceChildren(h("strong", {}, run.error.code), `: ${run.error.message}`);
  $("cancel-run").hidden = run.status !== "running";
}

function renderLoops(state) {
  const box = $("loops");
  for (const [id, node] of Object.entries(page.nodes)) {
    if (!node.loopBody) continue;
    let stepper = box.querySelector(`[data-loop="${CSS.escape(id)}"]`);
    if (!stepper) {
      stepper = h("div", {class: "loop-stepper", role: "group", "data-loop": id,
                          "aria-label": `Iterations of loop ${id}`},
        h("span", {class: "mono"}, id),
        h("button", {type: "button", class: "previous", "aria-label": `Previous iteration of ${id}`,
                     onclick: () => step(id, -1)}, "◀"),
        h("span", {class: "iteration", "aria-live": "polite"}),
        h("button", {type: "button", class: "next", "aria-label": `Next iteration of ${id}`,
                     onclick: () => step(id, 1)}, "▶"));
      box.append(stepper);
    }
    const count = iterationCount(page.nodes, state, id, page.chosen);
    const index = Math.min(page.chosen[id] || 0, Math.max(0, count - 1));
    page.chosen[id] = index;
    stepper.querySelector(".iteration").textContent = iterationText(index, count);
    stepper.querySelector(".previous").disabled = index <= 0;
    stepper.querySelector(".next").disabled = index >= count - 1;
    const label = page.elements.clusters.get(id);
    if (label) label.textContent = `${id} · ${iterationText(index, count)}`;
  }
}

function iterationText(index, count) {
  return count ? `iteration ${index} (${count} in all)` : "no iteration yet";
}

function step(loop, by) {
  page.pinned.add(loop);
  page.chosen[loop] = Math.max(0, (page.chosen[loop] || 0) + by);
  schedule();
}

function renderNodes(state) {
  const status = (id) => {
    const entry = entryOf(page.nodes, state, id, page.chosen);
    return entry ? entry.status : "pending";
  };
  for (const [id, element] of page.elements.nodes) {
    const entry = entryOf(page.nodes, state, id, page.chosen);
    const detail = detailLine(entry);
    const key = entryId(page.nodes, id, page.chosen);
    showNode(element, page.nodes[id], status(id), detail, `${key}: ${page.nodes[id].type}, ${detail}`);
    element.classList.toggle("selected", id === page.selected);
    element.setAttribute("aria-pressed", String(id === page.selected));
  }
  for (const edge of page.elements.edges) {
    edge.element.classList.toggle("inactive", status(edge.to) === "skipped");
  }
}

function renderDetails(state) {
  if (!page.selected) return;
  const key = entryId(page.nodes, page.selected, page.chosen);
  const entry = entryOf(page.nodes, state, page.selected, page.chosen);
  // Drawn again only when it changed: what a person folded or unfolded stays so.
  if (page.shown && page.shown[0] === key && page.shown[1] === entry) return;
  page.shown = [key, entry];
  showDetails($("details"), key, page.nodes[page.selected], entry);
}

function renderTimeline() {
  const origin = Date.parse(page.graph.startedAt) || firstStart(page.run.executionState);
  // The timeline is drawn anew: a row a person had focused keeps the focus.
  const row = document.activeElement && document.activeElement.closest(".timeline .row");
  drawTimeline($("timeline"), {
    run: page.run, origin, elapsed: elapsed(), deadlineMs: page.graph.deadlineMs,
    toDeadline: $("to-deadline").checked,
    selected: page.selected && entryId(page.nodes, page.selected, page.chosen),
    onSelect: selectEntry,
  });
  if (row) {
    const again = $("timeline").querySelector(`.row[data-entry="${CSS.escape(row.dataset.entry)}"]`);
    if (again) again.querySelector(".row-label").focus();
  }
}

function firstStart(state) {
  const starts = Object.values(state).map((e) => Date.parse(e.startedAt)).filter((t) => t);
  return starts.length ? Math.min(...starts) : Date.now();
}

function select(id) {
  page.selected = id;
  schedule();
  if (window.innerWidth < 900) $("details").scrollIntoView({block: "nearest"});
}

/** Select an entry of the timeline: its node, in its iterations. */
function selectEntry(key) {
  const [id, indexes] = parseEntryId(key);
  loopsAround(page.nodes, id).forEach((loop, i) => {
    page.chosen[loop] = indexes[i] || 0;
    page.pinned.add(loop);
  });
  select(id);
}

async function follow() {
  const ticker = setInterval(schedule, 500);  // running bars grow between events
  try {
    for await (const {event, data} of events(`${base}/stream`)) {
      page.run = applyEvent(page.run, page.nodes, event, data);
      if (event === "run.finished") setRun(data);
      schedule();
      if (event === "run.finished") break;
    }
  } catch {
    // The stream was refused (this token follows as many runs as it may) or cut: read
    // the run again every second instead.
  }
  while (page.run.status === "running") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const again = await api(base);
    if (again.status === 200) setRun(again.body);
    schedule();
  }
  clearInterval(ticker);
  schedule();
}

async function cancel() {
  $("cancel-run").disabled = true;
  const answer = await api(`${base}/cancel`, {method: "POST"});
  if (answer.status === 200) setRun(answer.body);
  else if (answer.status === 202) $("run-status").append(" · cancelling…");
  schedule();
}

function showProblem(answer) {
  const text = answer.status === 404 ? `There is no run named ${runId} for this token.`
    : `The run could not be read (${answer.status}): ${answer.body && answer.body.message}`;
  $("run-status").textContent = text;
}

async function main() {
  $("run-id").textContent = runId;
  document.title = `Run ${runId} · Workflow runner`;
  const [graph, run] = await Promise.all([api(`${base}/graph`), api(base)]);
  if (run.status !== 200) {
    showProblem(run);
    return;
  }
  const drawing = performance.now();
  page.graph = graph.status === 200 ? graph.body : {nodes: null};
  setRun(run.body);
  page.nodes = page.graph.nodes || graphFromState(page.run.executionState);
  $("run-note").hidden = Boolean(page.graph.nodes);
  page.elements = drawGraph($("graph"), layoutGraph(page.nodes), select);
  render();
  const drawn = performance.now();
  // How long the page took: to draw the run, and since the navigation began.
  document.documentElement.dataset.drawMs = (drawn - drawing).toFixed(1);
  document.documentElement.dataset.loadMs = drawn.toFixed(1);
  $("cancel-run").addEventListener("click", cancel);
  $("to-deadline").addEventListener("change", schedule);
  window.addEventListener("resize", schedule);
  if (page.run.status === "running") follow();
}

main();
