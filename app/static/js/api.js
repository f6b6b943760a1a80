// The pages' calls to the /v1 API: the token (asked for once, kept in this tab's session
// storage, sent as the Bearer header and nowhere else), JSON requests, and a run's events
// read from a stream (Server-Sent Events over fetch: EventSource cannot send a header).

const KEY = "runner.token";
let asking = null;  // the dialog's answer while it is open

/** The token, asking for it first when this tab has none. */
export async function token() {
  return sessionStorage.getItem(KEY) || askToken("");
}

function askToken(problem) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-problem").textContent = problem;
  asking = new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const given = input.value.trim();
      if (!given) return;
      input.value = "";  // kept in session storage only, never in the page
      sessionStorage.setItem(KEY, given);
      dialog.close();
      asking = null;
      showForget();
      resolve(given);
    }, {once: true});
  });
  dialog.showModal();
  input.focus();
  return asking;
}

function showForget() {
  const button = document.getElementById("forget-token");
  button.hidden = !sessionStorage.getItem(KEY);
  button.onclick = () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  };
}
document.addEventListener("DOMContentLoaded", () => {
  showForget();
  // Escape does not close the token's dialog: the page needs a token to show anything.
  document.getElementById("token-dialog").addEventListener("cancel", (e) => e.preventDefault());
});

/** The headers of a call with the token; a refused token is forgotten and asked for again. */
async function authorized(path, init) {
  for (;;) {
    const secret = await token();
    const response = await fetch(path, {
      ...init, cache: "no-store",
      headers: {...init.headers, Authorization: `Bearer ${secret}`},
    });
    if (response.status !== 401 && response.status !== 403) return response;
    sessionStorage.removeItem(KEY);
    await askToken(response.status === 401 ? "The service does not know that token."
      : "That token is disabled.");
  }
}

/**
 * One call to the API: {status, body} (body parsed from JSON, or null).
 * `text`: a body already written as JSON (the playground sends its editor's text as it is).
 */
export async function api(path, {method = "GET", body, text, signal} = {}) {
  const init = {method, signal, headers: {Accept: "application/json"}};
  if (body !== undefined || text !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = text !== undefined ? text : JSON.stringify(body);
  }
  const response = await authorized(path, init);
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return {status: response.status, body: parsed};
}

/**
 * A run's events from its stream, as {event, data} (data parsed); ends with the stream.
 * Throws {status, body} when the stream is refused (a 404, or 429 when the token follows
 * as many runs as it may).
 */
export async function* events(path, signal) {
  const response = await authorized(path, {signal, headers: {Accept: "text/event-stream"}});
  if (!response.ok || !response.body) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    throw {status: response.status, body};
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = parseEvent(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});  // the caller stopped reading: close the stream
  }
}

/** One event's lines (SSE): `event:` and `data:` fields; comments (`: keep-alive`) skipped. */
function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return {event: name, data: JSON.parse(data.join("\n"))};
}
