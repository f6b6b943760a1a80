// Building elements: text always goes in as text (never as HTML), so nothing a run
// holds can become markup.

const SVG = "http://www.w3.org/2000/svg";

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h("a", {href: "/runs"}, "Runs"). */
export function h(tag, attributes, ...children) {
  return build(document.createElement(tag), attributes, children);
}

/** An SVG element, the same way. */
export function s(tag, attributes, ...children) {
  return build(document.createElementNS(SVG, tag), attributes, children);
}

/** A duration in ms as people read it: 850 ms, 2.4 s, 1 min 5 s. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** An ISO time in the reader's own time zone, to the millisecond. */
export function clock(iso) {
  if (!iso) return "—";
  const time = new Date(iso);
  return `${time.toLocaleDateString()} ${time.toLocaleTimeString()}.${String(time.getMilliseconds()).padStart(3, "0")}`;
}

/** An ISO time as the time of day in the reader's time zone, to the millisecond. */
export function timeOfDay(iso) {
  if (!iso) return "—";
  const time = new Date(iso);
  return `${time.toLocaleTimeString()}.${String(time.getMilliseconds()).padStart(3, "0")}`;
}

/** A badge naming a status, coloured by it. */
export function badge(status) {
  return h("span", {class: `badge status-${status}`}, status);
}
