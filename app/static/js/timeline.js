// The timeline (a Gantt chart) of every attempt of a run: one row per entry that started,
// a bar per attempt (from `attemptLog` when a node made more than one, SPEC §14), a thin
// line per wait between attempts, the run's end and its deadline, against the run's time.

import {duration, s} from "./dom.js";

const ROW = 22;
const AXIS = 26;
const MAX_ROWS = 300;  // a loop may make thousands of instances: the first ones are drawn

/** Each attempt of an entry as {start, end, error} in ms from `origin` (end null: running). */
export function attemptsOf(entry, origin) {
  const at = (iso) => (iso ? Date.parse(iso) - origin : null);
  if (entry.attemptLog) {
    return entry.attemptLog.map((attempt) => ({
      start: at(attempt.startedAt), end: at(attempt.finishedAt), error: attempt.error}));
  }
  const running = entry.status === "running";
  return [{start: at(entry.startedAt), end: running ? null : at(entry.finishedAt),
           error: entry.status === "failure" ? entry.error || {} : null}];
}

function ticks(domain) {
  const rough = domain / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  const out = [];
  for (let t = 0; t <= domain + 1e-9; t += step) out.push(t);
  return out;
}

/**
 * Draw the timeline of `run` into `container`. `origin`: when the run started (ms since the
 * epoch); `elapsed`: its time so far (ms); `deadlineMs`: its deadline from the origin;
 * `toDeadline`: scale the axis to the deadline; `selected`: the entry id shown in the
 * details; `onSelect(entryId)`.
 */
export function drawTimeline(container, {run, origin, elapsed, deadlineMs, toDeadline, selected,
                                         onSelect}) {
  const rows = Object.entries(run.executionState || {}).filter(([, entry]) => entry.startedAt);
  const shown = rows.slice(0, MAX_ROWS);
  const attempts = shown.map(([, entry]) => attemptsOf(entry, origin));
  let end = Math.max(elapsed, 1);
  for (const list of attempts) {
    for (const attempt of list) end = Math.max(end, attempt.end === null ? 0 : attempt.end);
  }
  const domain = toDeadline && deadlineMs ? Math.max(end, deadlineMs) : end;
  const width = Math.max(container.clientWidth || 600, 280);
  const labelWidth = Math.min(170, Math.round(width * 0.32));
  const plot = width - labelWidth - 14;
  const x = (ms) => labelWidth + Math.max(0, Math.min(ms, domain)) / domain * plot;
  const bottom = AXIS + shown.length * ROW + 4;  // the rows end; the marks' labels below
  const height = bottom + 20;
  const svg = s("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
                        "aria-label": "Timeline of every attempt"});

  const axis = s("g", {class: "axis"});
  for (const t of ticks(domain)) {
    const anchor = t === 0 ? "start" : x(t) > width - 30 ? "end" : "middle";
    axis.append(s("line", {x1: x(t), x2: x(t), y1: AXIS - 6, y2: bottom}),
      s("text", {x: x(t), y: AXIS - 10, "text-anchor": anchor}, duration(t)));
  }
  svg.append(axis);

  shown.forEach(([entryId, entry], row) => {
    const top = AXIS + row * ROW;
    const group = s("g", {class: `row${entryId === selected ? " selected" : ""}`,
                          "data-entry": entryId, "data-status": entry.status});
    group.append(s("rect", {class: "row-band", x: 0, y: top, width, height: ROW}));
    const select = () => onSelect(entryId);
    group.append(s("g", {class: "row-label", tabindex: 0, role: "button",
                         "aria-label": `${entryId}: ${entry.status}`, onclick: select,
                         onkeydown: (event) => {
                           if (event.key === "Enter" || event.key === " ") {
                             event.preventDefault();
                             select();
                           }
                         }},
      s("text", {x: 4, y: top + 15}, entryId.length > 22 ? `${entryId.slice(0, 21)}…` : entryId)));
    let previous = null;
    attempts[row].forEach((attempt, i) => {
      const stop = attempt.end === null ? elapsed : attempt.end;
      if (previous !== null && attempt.start > previous) {
        group.append(s("line", {class: "wait", x1: x(previous), x2: x(attempt.start),
                                y1: top + ROW / 2, y2: top + ROW / 2},
          s("title", {}, `${entryId}: waited ${duration(attempt.start - previous)}`)));
      }
      const kind = attempt.end === null ? "running" : attempt.error ? "failed" : "ok";
      const what = attempt.error && attempt.error.code ? ` · ${attempt.error.code}` : "";
      group.append(s("rect", {
        class: `attempt ${kind}`, "data-attempt": i + 1, x: x(attempt.start), y: top + 4,
        width: Math.max(2, x(stop) - x(attempt.start)), height: ROW - 8, rx: 2},
      s("title", {}, `${entryId} attempt ${i + 1}: ${duration(stop - attempt.start)}` +
                     ` from ${duration(attempt.start)}${what}`)));
      previous = stop;
    });
    svg.append(group);
  });

  if (run.status !== "running") {
    svg.append(s("g", {class: "run-end"},
      s("line", {x1: x(run.durationMs), x2: x(run.durationMs), y1: AXIS - 6, y2: bottom}),
      s("title", {}, `the run ended after ${duration(run.durationMs)}`)));
  }
  if (deadlineMs) {
    const inside = deadlineMs <= domain;
    const at = inside ? x(deadlineMs) : labelWidth + plot;
    svg.append(s("g", {class: "deadline", "data-deadline-ms": deadlineMs},
      inside ? s("line", {x1: at, x2: at, y1: AXIS - 6, y2: bottom}) : null,
      s("text", {x: at, y: bottom + 14, "text-anchor": "end"},
        inside ? "deadline" : `deadline at ${duration(deadlineMs)} →`)));
  }
  const note = rows.length > shown.length
    ? `The first ${shown.length} of ${rows.length} entries are drawn.` : null;
  container.replaceChildren(svg);
  if (note) container.append(note);
}
