// The playground's editor: CodeMirror 6 with JSON, its parse errors, the API's
// validation errors as diagnostics, and highlighting by class (styled in pages.css).
export {EditorState} from "@codemirror/state";
export {
  EditorView, drawSelection, highlightActiveLine, highlightActiveLineGutter, keymap,
  lineNumbers,
} from "@codemirror/view";
export {defaultKeymap, history, historyKeymap} from "@codemirror/commands";
export {
  bracketMatching, foldGutter, foldKeymap, indentOnInput, syntaxHighlighting, syntaxTree,
} from "@codemirror/language";
export {json, jsonParseLinter} from "@codemirror/lang-json";
export {lintGutter, setDiagnostics} from "@codemirror/lint";
export {classHighlighter} from "@lezer/highlight";
