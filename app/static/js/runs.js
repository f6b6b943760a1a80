// The runs list (GET /runs): the caller's runs newest first, from GET /v1/runs; the
// status filter and the page (the API's cursor) are in the page's own address.

import {api} from "./api.js";
import {badge, clock, duration, h} from "./dom.js";

const $ = (id) => document.getElementById(id);

function address(status, cursor) {
  const query = new URLSearchParams();
  if (status) query.set("status", status);
  if (cursor) query.set("cursor", cursor);
  const text = query.toString();
  return text ? `/runs?${text}` : "/runs";
}

function row(run) {
  return h("tr", {"data-run": run.runId, "data-status": run.status},
    h("td", {}, h("a", {href: `/runs/${encodeURIComponent(run.runId)}`, class: "mono"}, run.runId)),
    h("td", {"data-label": "Status"}, badge(run.status)),
    h("td", {"data-label": "Started"}, clock(run.createdAt)),
    h("td", {"data-label": "Duration", class: "number"},
      run.durationMs === null ? "—" : duration(run.durationMs)),
    h("td", {"data-label": "CU", class: "number"}, run.totalCu));
}

async function main() {
  const query = new URLSearchParams(location.search);
  const status = query.get("status") || "";
  const cursor = query.get("cursor") || "";
  $("status").value = status;
  $("filter").addEventListener("submit", (event) => {
    event.preventDefault();
    location.assign(address($("status").value, ""));
  });
  const answer = await api(`/v1/${address(status, cursor).slice(1)}`);
  if (answer.status !== 200) {
    $("runs-status").textContent = `The runs could not be read (${answer.status}): ` +
      `${answer.body && answer.body.message}`;
    return;
  }
  const {runs, nextCursor} = answer.body;
  $("runs").querySelector("tbody").replaceChildren(...runs.map(row));
  $("runs").hidden = !runs.length;
  const which = status ? ` ${status}` : "";
  $("runs-status").textContent = runs.length
    ? `${runs.length}${which} run${runs.length === 1 ? "" : "s"}${cursor ? " (older)" : ", newest first"}.`
    : `No${which} runs${cursor ? " older than these" : " yet"}: start one in the playground.`;
  $("newest").hidden = !cursor;
  $("newest").href = address(status, "");
  $("older").hidden = !nextCursor;
  if (nextCursor) $("older").href = address(status, nextCursor);
}

main();
