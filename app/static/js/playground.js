// The playground (GET /playground): a request body in a JSON editor, checked by
// POST /v1/workflows/validate or started by POST /v1/runs, whose run page it then opens.
// The API names each problem by a flat path (definition.nodes.check.children[1]); the
// editor's syntax tree finds that place in the text, where the problem is marked.

import {api} from "./api.js";
import {h} from "./dom.js";
import {
  EditorState, EditorView, bracketMatching, classHighlighter, defaultKeymap, drawSelection,
  foldGutter, foldKeymap, highlightActiveLine, highlightActiveLineGutter, history,
  historyKeymap, indentOnInput, json, jsonParseLinter, keymap, lineNumbers, lintGutter,
  setDiagnostics, syntaxHighlighting, syntaxTree,
} from "../vendor/editor.js";

const $ = (id) => document.getElementById(id);
const VALUES = new Set(["Object", "Array", "String", "Number", "True", "False", "Null"]);

/** "definition.nodes.check.children[1]" → ["definition", "nodes", "check", "children", 1]. */
export function splitPath(path) {
  return [...path.matchAll(/\[(\d+)\]|([^.[\]]+)/g)]
    .map((match) => (match[1] !== undefined ? Number(match[1]) : match[2]));
}

function children(node) {
  const out = [];
  for (let child = node.firstChild; child; child = child.nextSibling) out.push(child);
  return out;
}

const valueIn = (node) => children(node).find((child) => VALUES.has(child.name));

/**
 * Where the API's `path` is in the editor's text, as {from, to}: the key or item it names,
 * or the deepest of its parents found (a missing key is reported at its object's key).
 * A key may hold dots (payload keys, condition keys): the longest that exists is taken.
 */
export function locate(state, path) {
  const segments = splitPath(path);
  const textOf = (node) => state.doc.sliceString(node.from, node.to);
  let value = valueIn(syntaxTree(state).topNode);
  let mark = {from: 0, to: 0};
  let i = 0;
  while (value && i < segments.length) {
    if (value.name === "Object" && typeof segments[i] === "string") {
      const found = findProperty(value, segments, i, textOf);
      if (!found) break;
      const [property, taken] = found;
      const name = property.getChild("PropertyName");
      mark = {from: name.from, to: name.to};
      value = valueIn(property);
      i += taken;
    } else if (value.name === "Array" && typeof segments[i] === "number") {
      const item = children(value).filter((child) => VALUES.has(child.name))[segments[i]];
      if (!item) break;
      value = item;
      const nested = item.name === "Object" || item.name === "Array";
      mark = {from: item.from, to: nested ? item.from + 1 : item.to};
      i += 1;
    } else {
      break;
    }
  }
  return mark;
}

function findProperty(object, segments, start, textOf) {
  const properties = children(object).filter((child) => child.name === "Property");
  const keyOf = (property) => {
    const name = property.getChild("PropertyName");
    try {
      return name ? JSON.parse(textOf(name)) : null;
    } catch {
      return null;
    }
  };
  for (let take = segments.length - start; take >= 1; take -= 1) {
    const parts = segments.slice(start, start + take);
    if (parts.some((part) => typeof part !== "string")) continue;
    const key = parts.join(".");
    const property = properties.find((candidate) => keyOf(candidate) === key);
    if (property) return [property, take];
  }
  return null;
}

let view = null;

function createEditor() {
  view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: "",
      extensions: [
        lineNumbers(), highlightActiveLineGutter(), foldGutter(), history(), drawSelection(),
        indentOnInput(), bracketMatching(), highlightActiveLine(),
        syntaxHighlighting(classHighlighter), json(), lintGutter(),
        keymap.of([
          {key: "Mod-Enter", run: () => { send("run"); return true; }},
          {key: "Shift-Mod-Enter", run: () => { send("validate"); return true; }},
          ...defaultKeymap, ...historyKeymap, ...foldKeymap,
        ]),
        EditorView.contentAttributes.of({"aria-label": "Request body (JSON)"}),
      ],
    }),
  });
}

async function loadExample(name) {
  const response = await fetch(`/static/examples/${encodeURIComponent(name)}.json`);
  const text = (await response.text()).trimEnd();
  view.dispatch({changes: {from: 0, to: view.state.doc.length, insert: text}});
  showProblems([], "");
}

/** Mark each problem ({from, to, path, message}) in the text and list it under the editor. */
function showProblems(problems, summary) {
  view.dispatch(setDiagnostics(view.state, problems.map((problem) => ({
    from: problem.from, to: problem.to, severity: "error",
    message: problem.path ? `${problem.path}: ${problem.message}` : problem.message}))));
  $("problems").replaceChildren(...problems.map((problem) => {
    const line = view.state.doc.lineAt(problem.from).number;
    return h("li", {"data-line": line},
      h("button", {type: "button", onclick: () => {
        view.dispatch({selection: {anchor: problem.from, head: problem.to}, scrollIntoView: true});
        view.focus();
      }}, h("strong", {}, `Line ${line}`), problem.path ? " · " : "",
      problem.path ? h("span", {class: "where"}, problem.path) : "", ` — ${problem.message}`));
  }));
  $("outcome").textContent = summary;
}

function validSummary(body) {
  const loops = Object.keys(body.loops || {}).length;
  return `Valid: ${body.nodeCount} nodes on ${body.levels.length} levels` +
    (loops ? `, ${loops} loop${loops === 1 ? "" : "s"}.` : ".");
}

/** Check (`validate`) or start (`run`) the editor's request. */
async function send(kind) {
  const syntax = jsonParseLinter()(view);
  if (syntax.length) {
    showProblems(syntax.map((d) => ({from: d.from, to: d.to, message: d.message})),
      "The request is not valid JSON.");
    return;
  }
  for (const id of ["validate", "run"]) $(id).disabled = true;
  $("outcome").textContent = kind === "run" ? "Starting…" : "Checking…";
  const path = kind === "run" ? "/v1/runs" : "/v1/workflows/validate";
  const answer = await api(path, {method: "POST", text: view.state.doc.toString()});
  for (const id of ["validate", "run"]) $(id).disabled = false;
  const body = answer.body || {};
  if (answer.status === 202) {
    location.assign(`/runs/${encodeURIComponent(body.runId)}`);
  } else if (answer.status === 200) {
    showProblems([], validSummary(body));
  } else if (body.errors) {
    const problems = Object.entries(body.errors).flatMap(([where, messages]) =>
      messages.map((message) => ({...locate(view.state, where), path: where, message})));
    showProblems(problems, `${body.message} (${body.code}): ${problems.length} ` +
      `problem${problems.length === 1 ? "" : "s"}.`);
  } else {
    showProblems([], `${body.message || "Refused"} (${body.code || answer.status}).`);
  }
}

async function main() {
  createEditor();
  $("example").addEventListener("change", () => loadExample($("example").value));
  $("validate").addEventListener("click", () => send("validate"));
  $("run").addEventListener("click", () => send("run"));
  await loadExample($("example").value);
  document.documentElement.dataset.ready = "1";
}

main();
