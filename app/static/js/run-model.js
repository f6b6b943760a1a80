// What the run page shows, as plain functions over the API's values: the run's graph
// (GET /v1/runs/<id>/graph: node id → {type, level, children, branch, loopBody, loop}),
// its state (GET /v1/runs/<id>: executionState), and which iteration of each loop is
// shown. A loop body's node in iteration i is the entry "<id>[i]" ("<id>[i][j]" in
// nested loops, SPEC §11); one that never ran is listed once as "<id>".

const INSTANCE = /^(.*?)((?:\[\d+\])+)$/;

/** An entry id as its node id and iteration indexes: "check[2][0]" → ["check", [2, 0]]. */
export function parseEntryId(entryId) {
  const match = INSTANCE.exec(entryId);
  if (!match) return [entryId, []];
  return [match[1], match[2].slice(1, -1).split("][").map(Number)];
}

/** The loops whose bodies hold node `id`, outermost first. */
export function loopsAround(nodes, id) {
  const loops = [];
  for (let loop = nodes[id] && nodes[id].loop; loop; loop = nodes[loop] && nodes[loop].loop) {
    loops.unshift(loop);
  }
  return loops;
}

/** The id of node `id`'s entry in the iterations `chosen` (loop id → index). */
export function entryId(nodes, id, chosen) {
  return id + loopsAround(nodes, id).map((loop) => `[${chosen[loop] || 0}]`).join("");
}

/** Node `id`'s entry in the iterations chosen: the instance, else the entry of a body node
 * that never ran, else null (not started yet). */
export function entryOf(nodes, state, id, chosen) {
  return state[entryId(nodes, id, chosen)] || state[id] || null;
}

/** How many iterations loop `loop` has (in the iterations chosen for the loops around it):
 * its result's count, or, while it runs, the highest iteration listed so far. */
export function iterationCount(nodes, state, loop, chosen) {
  const entry = entryOf(nodes, state, loop, chosen);
  let count = (entry && entry.result && entry.result.iterationCount) || 0;
  const outer = loopsAround(nodes, loop).map((around) => chosen[around] || 0);
  for (const key of Object.keys(state)) {
    const [id, indexes] = parseEntryId(key);
    if (!nodes[id] || nodes[id].loop !== loop || indexes.length !== outer.length + 1) continue;
    if (outer.every((index, i) => indexes[i] === index)) {
      count = Math.max(count, indexes[indexes.length - 1] + 1);
    }
  }
  return count;
}

/** A graph for a run stored before graphs were: its entries' nodes, their loops, and no
 * edges; each node is placed after a node of the level above (`placedAfter`: an edge the
 * layout uses and nothing draws), so the layout still puts them in their levels. */
export function graphFromState(state) {
  const nodes = {};
  for (const [key, entry] of Object.entries(state)) {
    const [id] = parseEntryId(key);
    if (!nodes[id]) {
      nodes[id] = {type: entry.type, level: entry.level, children: []};
      if (entry.loop) nodes[id].loop = entry.loop;
    }
  }
  const levels = [];
  for (const [id, node] of Object.entries(nodes)) {
    if (node.loop && nodes[node.loop]) nodes[node.loop].loopBody = [];
    (levels[node.level] = levels[node.level] || []).push(id);
  }
  for (const node of Object.values(nodes)) {
    const above = levels[node.level - 1];
    if (above) node.placedAfter = above[0];
  }
  return nodes;
}

/** The run after one of its stream's events (SPEC §12); `run.finished` brings the whole
 * run. Entries are replaced, never edited: the previous ones stay as they were. */
export function applyEvent(run, nodes, event, data) {
  if (event === "run.finished") return data;
  const state = {...(run.executionState || {})};
  if (event === "node.finished") {
    state[data.nodeId] = data.state;
  } else if (event === "node.started" || event === "node.retrying") {
    const [id] = parseEntryId(data.nodeId);
    const before = state[data.nodeId] || {type: nodes[id] && nodes[id].type, status: "running"};
    const entry = {...before, status: "running"};
    if (data.attempt) entry.attempts = Math.max(entry.attempts || 0, data.attempt);
    if (data.startedAt && !entry.startedAt) entry.startedAt = data.startedAt;
    state[data.nodeId] = entry;
  } else {
    return run;
  }
  return {...run, executionState: state};
}

/** What a node's box says under its type: its status and why, or how long it took. */
export function detailLine(entry) {
  if (!entry) return "pending";
  const attempts = entry.attempts > 1 ? ` · ${entry.attempts} attempts` : "";
  switch (entry.status) {
    case "failure":
      return `failure · ${entry.error ? entry.error.code : "?"}${attempts}`;
    case "skipped":
      return `skipped · ${entry.reason || "?"}`;
    case "running":
      return `running${entry.attempts > 1 ? ` · attempt ${entry.attempts}` : ""}`;
    case "success":
      return `success${entry.durationMs !== undefined ? ` · ${entry.durationMs} ms` : ""}${attempts}`;
    default:
      return entry.status;
  }
}
