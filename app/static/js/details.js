// The selected node's panel: its entry's facts, error, attempts, input and result (as the
// API gives them, secrets already redacted).

import {badge, clock, duration, h, timeOfDay} from "./dom.js";
import {jsonView} from "./json-view.js";

/** Fill `container` with entry `entryId` of node `node` (its shape); `entry` null: not
 * started yet. */
export function showDetails(container, entryId, node, entry) {
  const status = entry ? entry.status : "pending";
  const parts = [h("h3", {id: "details-node"}, h("span", {class: "mono"}, entryId), " ",
                   badge(status))];
  const facts = [["type", node ? node.type : entry && entry.type]];
  if (entry) {
    if (entry.reason) facts.push(["skipped because", entry.reason]);
    if (entry.loop !== undefined) facts.push(["loop", `${entry.loop}, iteration ${entry.iteration}`]);
    facts.push(["level", entry.level]);
    if (entry.attempts) facts.push(["attempts", entry.attempts]);
    if (entry.startedAt) facts.push(["started", clock(entry.startedAt)]);
    if (entry.finishedAt) facts.push(["finished", clock(entry.finishedAt)]);
    if (entry.durationMs !== undefined) facts.push(["took", duration(entry.durationMs)]);
  } else {
    facts.push(["status", "not started yet"]);
  }
  parts.push(h("table", {class: "facts-table"}, h("tbody", {},
    facts.filter(([, value]) => value !== undefined && value !== null)
      .map(([name, value]) => h("tr", {}, h("th", {scope: "row"}, name), h("td", {}, value))))));
  if (entry && entry.error) {
    parts.push(h("h3", {}, "Error"), h("p", {class: "problem", id: "details-error"},
      h("strong", {}, entry.error.code), ": ", entry.error.message,
      entry.error.retryable ? " (retryable)" : ""), jsonView(entry.error, null, 0));
  }
  if (entry && entry.attemptLog) parts.push(h("h3", {}, "Attempts"), attemptTable(entry.attemptLog));
  if (entry && "input" in entry) parts.push(h("h3", {}, "Input"), jsonView(entry.input, null));
  if (entry && "result" in entry) parts.push(h("h3", {}, "Result"), jsonView(entry.result, null));
  container.replaceChildren(...parts);
}

function attemptTable(log) {
  return h("table", {class: "attempts"},
    h("thead", {}, h("tr", {}, ["#", "started", "took", "error"].map((name) => h("th", {scope: "col"}, name)))),
    h("tbody", {}, log.map((attempt, i) => h("tr", {},
      h("td", {}, i + 1), h("td", {}, timeOfDay(attempt.startedAt)),
      h("td", {}, attempt.durationMs === null ? "running" : duration(attempt.durationMs)),
      h("td", {}, attempt.error ? `${attempt.error.code}: ${attempt.error.message}` : "—")))));
}
