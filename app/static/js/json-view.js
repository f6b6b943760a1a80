// A JSON value as a tree people can fold: objects and arrays are <details> elements
// (keyboard-usable as they are), open down to `openDepth`, large ones closed.

import {h} from "./dom.js";

const LARGE = 50;  // an object or array with more entries starts closed

/** The tree of `value`, its top labelled `label`. */
export function jsonView(value, label, openDepth = 2) {
  return h("div", {class: "json"}, node(label, value, 0, openDepth));
}

function node(key, value, depth, openDepth) {
  if (value === null || typeof value !== "object") {
    return h("div", {class: "row"}, keyPart(key), leaf(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const size = Array.isArray(value)
    ? `[${entries.length} item${entries.length === 1 ? "" : "s"}]`
    : `{${entries.length} key${entries.length === 1 ? "" : "s"}}`;
  const open = depth < openDepth && entries.length <= LARGE;
  const details = h("details", {open}, h("summary", {}, keyPart(key), size));
  // Children are built when first opened: a large result costs nothing until looked at.
  const fill = () => {
    if (details.dataset.filled) return;
    details.dataset.filled = "1";
    for (const [k, v] of entries) details.append(node(k, v, depth + 1, openDepth));
  };
  if (open) fill();
  else details.addEventListener("toggle", fill);
  return details;
}

function keyPart(key) {
  if (key === undefined || key === null) return null;
  return h("span", {class: "key"}, typeof key === "number" ? `${key}: ` : `${JSON.stringify(key)}: `);
}

function leaf(value) {
  if (typeof value === "string") return h("span", {class: "string"}, JSON.stringify(value));
  if (typeof value === "number") return h("span", {class: "number"}, String(value));
  return h("span", {class: "literal"}, String(value));
}
