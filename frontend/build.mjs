// Bundles the libraries the pages use into app/static/vendor (make vendor):
// one minified ES module per entry of src/, and LICENSES.txt naming every package
// bundled, its version and its licence text. Run after `npm ci` in this directory.
import {build} from "esbuild";
import {readFileSync, readdirSync, writeFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "app", "static", "vendor");
const entries = readdirSync(join(here, "src")).filter((name) => name.endsWith(".js")).sort();

// Packages whose published file has others inside it: dagre's has graphlib's.
const inside = {"@dagrejs/dagre": ["@dagrejs/graphlib"]};

// CodeMirror's styles (style-mod) go into a constructed style sheet only inside a shadow
// root, and into a <style> element in a document, which the pages' Content-Security-
// Policy refuses (no inline style). A constructed sheet works in a document too: use it
// there as well. The build fails if style-mod changes that line, or is not bundled so.
const STYLE_MOD_TEST = "if (!root.head && root.adoptedStyleSheets && win.CSSStyleSheet) {";
let sheetsPatched = false;
const constructedSheets = {
  name: "style-mod-constructed-sheets",
  setup(build) {
    build.onLoad({filter: /style-mod[\\/]src[\\/]style-mod\.js$/}, ({path}) => {
      const source = readFileSync(path, "utf8");
      if (!source.includes(STYLE_MOD_TEST)) throw new Error(`${path}: its test has changed`);
      sheetsPatched = true;
      return {contents: source.replace(STYLE_MOD_TEST,
        "if (root.adoptedStyleSheets && win.CSSStyleSheet) {"), loader: "js"};
    });
  },
};

const packages = new Map();  // name → directory, of every package bundled
for (const entry of entries) {
  const result = await build({
    entryPoints: [join(here, "src", entry)], outfile: join(out, entry), bundle: true,
    format: "esm", minify: true, target: "es2020", legalComments: "none", metafile: true,
    absWorkingDir: here, plugins: [constructedSheets],
  });
  for (const input of Object.keys(result.metafile.inputs)) {
    const match = input.match(/^node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    for (const name of match ? [match[1], ...(inside[match[1]] || [])] : []) {
      packages.set(name, join(here, "node_modules", name));
    }
  }
}

if (!sheetsPatched) throw new Error("style-mod was not bundled from src/style-mod.js");

const licences = [...packages.keys()].sort().map((name) => {
  const directory = packages.get(name);
  const manifest = JSON.parse(readFileSync(join(directory, "package.json"), "utf8"));
  const file = readdirSync(directory).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? readFileSync(join(directory, file), "utf8").trim() : `(${manifest.license})`;
  return `${name} ${manifest.version} (${manifest.license})\n\n${text}\n`;
});
writeFileSync(join(out, "LICENSES.txt"),
  "The libraries bundled into this directory's files (frontend/ says how they are built).\n\n" +
  licences.join("\n" + "-".repeat(72) + "\n\n"));
console.log(`${entries.join(", ")} and LICENSES.txt (${packages.size} packages) in ${out}`);
