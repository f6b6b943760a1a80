"""Hypothesis strategies for ``tests/test_fuzz.py``: request bodies for the run endpoints.

``run_bodies()`` draws *valid-ish* bodies: a manual root and 1..19 nodes of known
types, each wired to parents earlier in a random order (rarely a cycle, a
self-loop, an unknown child or an unreachable node), payloads built from each
type's own fields, and strings holding ``{{…}}`` expressions over ancestors,
other nodes, every namespace, fallbacks, brackets and garbage (a path into an
ancestor mostly one its type's result can hold, as validation refuses the
others). Every body
carries a ``timeoutMs`` of at most 2000 (or one that is refused), so no run can
outlive its example.

``raw_requests()`` draws what a careless client sends: any JSON, wrong top-level
types and keys, deep nesting, huge strings, number literals no double holds,
bytes that are not JSON, and content types that are not JSON.

Nothing here can reach a network: outbound nodes get IP literals that the SSRF
guard refuses before connecting (default configuration) or URLs that do not
parse, and an expression in a URL only ever fills in its path.

Most helpers take hypothesis's ``draw`` and return a value: drawing directly
is several times faster than building a strategy per node.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from hypothesis import strategies as st

from app.nodes import NODE_TYPES

MAX_NODES = 20
MAX_RUN_MS = 2000
BLOCKED_URLS = ("http://10.0.0.1/", "http://127.0.0.1:9/", "https://169.254.169.254/latest/",
                "http://192.168.1.1:8080/hook", "http://[::1]:9/", "http://100.64.0.1/",
                "http://0.0.0.0/", "http://224.0.0.1/", "http://user:pw@10.0.0.1/x?y=1")
NOT_URLS = ("ftp://10.0.0.1/", "http://", "not a url", "", "http://[::1/", "file:///etc/passwd")
TYPES = (*["log", "if"] * 3, *["filter", "pluck", "format", "regex", "hello-world"] * 2,
         *["convert-to-wei", "convert-from-wei"] * 2, "list-min", "list-max", "generate-id",
         "delay", "http-request", "send-webhook", "code-transform")
ODD_TYPES = ("wait", "manual", "nope", "Log", "")
FIELDS = ("result", "input", "payload", "status", "error")
NAMES = ("a", "price", "items", "name", "x-y", "values", "filtered", "output", "wei", "branch",
         "matches", "message", "0", "1", "12")
LITERALS = ("0", '"none"', "true", "false", "null", "1.5", "-2e3", '"a || b"')
GARBAGE_HOLES = ("{{}}", "{{ }}", "{{a..b}}", '{{"open}}', "{{@field}}", "{{a[}}", "{{a[x]}}",
                 "{{ || }}", "{{{x}}}", "{{root}} }}", "{{", "}}", "{{.a}}", "{{$nodes}}",
                 "{{$nodes.}}", '{{root.result["k"]}}', "{{ root . result . 0 }}", "{{1 2}}",
                 "{{$props.a || }}", "{{root.result.$x}}", '{{"x\\"}}"}}')
ITEM_PATHS = ("name", "price", "asset.symbol", "qty", "items[0]", "rows.0.id", "", " amount ",
              "[0]", "a [ 1 ] . b")
BAD_ITEM_PATHS = ("a[", "a..b", "a]", ".a", "a[x]")
ITEM_KEYS = ("amount", "asset.symbol", "{{@amount}}", "@price", "{{@}}", "", "{{ @asset.symbol }}")
PATTERNS = ("(?P<sym>[A-Z]{3,4}) ([0-9.]+)", "[A-Z]{3,4}", "", "(a+)+$", "a*b|a", "(?<=x)y",
            r"(\d+)?", "(?P<1>a)", "[", "é+", "(?i)usdc", "x{1001}", "(?P<n>a)|(b)")
CODES = ("function transform(input) { return input; }",
         "function transform(input) { throw new Error('no ' + typeof input); }",
         "function transform(input) { return JSON.stringify(input).length; }",
         "function transform(i) { return undefined; }", "var x = 1;",
         "function transform(input) {", "function transform(i) { while (true) {} }",
         "async function transform(i) { return 1; }",
         "function transform(i) { return new Array(5).fill(i); }")
OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$notIn", "$contains",
       "$notContains", "$startsWith", "$endsWith", "$exists", "$notExists")
BAD_CONDITIONS = ({}, {"$bogus": 1}, {"$and": "x"}, {"price": 5}, {"$or": [[]]},
                  {"p": {"$in": 3}}, {"p": {"$exists": "yes"}}, {"$gt": [1]}, "x")
TEMPLATE_PARTS = ("{{@name}}", ": ", "{{@ qty }}", "{{@}}", "{{@missing}}", "{{@a[}}", " × ")
ERROR_CODES = ("INVALID_INPUT", "TIMEOUT", "NETWORK_ERROR", "CODE_ERROR", "HTTP_ERROR")
INPUT_TYPES = ("string", "number", "boolean", "object", "array")
INPUT_KEYS = ("price", "items", "text", "amount")
PROP_KEYS = ("apiKey", "threshold", "label", "list")
BAD_INPUT_ITEMS = ({"key": "price", "type": "date"}, {"type": "number"}, {"key": 5}, "x", None,
                   {"key": ["a"], "type": "number"}, {"key": "a", "type": "number",
                                                      "required": "yes"})


def rarely(draw, one_in: int = 60) -> bool:
    """True about one time in ``one_in`` (shrinking goes to False).

    Not ``integers(0, n - 1) == n - 1``: hypothesis favours bounds, which made that
    fire several times too often. A middle element of ``sampled_from`` does not.
    """
    return draw(st.sampled_from(range(one_in))) == one_in // 2


def pick(draw, options):
    """One of ``options``."""
    return draw(st.sampled_from(options))


def some(draw, **makers) -> dict:
    """Each key of ``makers`` or not, its value made by calling its maker."""
    return {key: make() for key, make in makers.items() if draw(st.booleans())}


# -- JSON values -----------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=()), max_size=10)  # lone surrogates too
scalars = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | texts
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(texts, children, max_size=3), max_leaves=6)
numbers = (st.integers(-10**6, 10**24) | st.floats(-1e6, 1e6)
           | st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,20})?", fullmatch=True)
           | st.sampled_from(["1e999999999", "-1e-999999999", "1E+1000000000000", "-0.0"]))
# Short secrets: a sensitive prop's value is redacted wherever it appears in text.
prop_values = json_values | st.sampled_from(["E", "T", "_", "a", "0", "sk-1", "INPUT", "true"])
symbols = st.sampled_from(["ETH", "USDC", "DAI", "SPAM", "usdc", ""])
items = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["tea", "milk"]) | texts, "qty": numbers, "price": numbers,
    "amount": numbers, "asset": st.fixed_dictionaries({"symbol": symbols})})
triggers = st.fixed_dictionaries({}, optional={
    "price": numbers, "amount": numbers, "coin": symbols, "memo": texts, "wei": numbers,
    "text": st.sampled_from(["paid ETH 1.5 and USDC 20", "", "aaaa"]) | texts,
    "items": st.lists(items, max_size=4), "users": st.lists(items, max_size=3),
    "flag": st.booleans(), "extra": json_values})
decimal_texts = (st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{1,20})?", fullmatch=True)
                 | st.sampled_from(["1e3", ".5", "5.", " 1", "0x10", "+1", "", "1_000", "٣"]))


def in_range(draw, low: int, high: int, wrong=(), one_in: int = 60) -> object:
    """An integer in ``low..high``; one time in ``one_in`` one of ``wrong``."""
    if wrong and rarely(draw, one_in):
        return pick(draw, wrong)
    return draw(st.integers(low, high))


# -- expressions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What a node's expressions can name: its ancestors, every node, declared keys."""

    ancestors: tuple[str, ...]
    ids: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    props: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    kinds: Mapping[str, str] = field(default_factory=dict, hash=False)  # node → type


def path_tail(draw) -> str:
    """Zero to three more segments: dotted, spaced, bracketed, numeric."""
    out = ""
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
        out += pick(draw, [f".{name}", f" . {name}", f'["{name} k"]', f"[{len(name)}]"])
    return out


def path(draw, scope: Scope) -> str:
    """A path term: mostly an ancestor's field, else a namespace; rarely a bad reference."""
    kind = pick(draw, ["any", "bad"]) if rarely(draw, 40) else pick(draw, [
        "ancestor"] * 8 + ["$nodes"] * 2 + ["$props", "$inputs", "$vars", "$trigger", "$run"])
    if kind == "$inputs" and not scope.inputs and not rarely(draw, 10):
        kind = "$props"
    if kind in ("ancestor", "$nodes", "any"):
        node = pick(draw, scope.ancestors if kind != "any" and scope.ancestors else scope.ids)
        head = f"$nodes.{node}" if kind == "$nodes" else node
        return f"{head}.{node_tail(draw, scope.kinds.get(node))}"
    if kind in ("$props", "$inputs", "$vars"):
        keys = {"$props": scope.props, "$inputs": scope.inputs, "$vars": scope.variables}[kind]
        key = pick(draw, keys) if keys and not rarely(draw, 10) else "missing"
        return f"{kind}.{key}{path_tail(draw)}"
    return pick(draw, {
        "$trigger": ["$trigger.body.price", "$trigger.body.items", "$trigger.triggeredAt",
                     "$trigger.headers", "$trigger.source", "$trigger.body"],
        "$run": ["$run.id", "$workflow.id"],
        "bad": ["$nope.x", "$nodes", "ghost.result", "$props", "root"]}[kind])


def node_tail(draw, kind: str | None) -> str:
    """What follows a node id: a section and a path into it that a node of ``kind`` can
    hold; rarely (or for an unknown type) any."""
    node_type = NODE_TYPES.get(kind)
    if node_type is None or rarely(draw, 20):
        return f"{pick(draw, FIELDS)}{path_tail(draw)}"
    section = pick(draw, FIELDS)
    if section == "input":  # the resolved payload: anything may be inside
        return f"input{path_tail(draw)}"
    if section != "result":  # status, error, payload: their shapes are fixed
        return section
    return "result" + result_tail(draw, node_type.result)


def result_tail(draw, schema: dict) -> str:
    """A path into a result of ``schema``: a declared field, then anything where the
    schema is free-form."""
    fields = schema.get("properties")
    if not fields or schema.get("additionalProperties", True) is not False:
        return path_tail(draw)  # open: the root's result (the trigger's payload)
    name = pick(draw, sorted(fields))
    return f".{name}" + (path_tail(draw) if "type" not in fields[name] else "")


def hole(draw, scope: Scope) -> str:
    """One ``{{ … }}`` with fallbacks; rarely one that does not parse."""
    if rarely(draw):
        return pick(draw, GARBAGE_HOLES)
    terms = [path(draw, scope)]
    for _ in range(draw(st.integers(0, 2))):  # fallbacks
        terms.append(pick(draw, LITERALS) if draw(st.booleans()) else path(draw, scope))
    pad = pick(draw, ["", " ", "\t "])
    return "{{" + pad + " || ".join(terms) + pad + "}}"


def template(draw, scope: Scope) -> str:
    """A string with holes: a lone hole, or holes inside text."""
    if draw(st.booleans()):
        return hole(draw, scope)  # a whole-value expression keeps its type
    out = draw(st.text(max_size=5))
    for _ in range(draw(st.integers(1, 3))):
        out += hole(draw, scope) + draw(st.text(max_size=5))
    return out


def value(draw, scope: Scope, literal, one_in: int = 3):
    """A literal drawn from ``literal``, or (one time in ``one_in``) a template."""
    return template(draw, scope) if rarely(draw, one_in) else draw(literal)


def item_path(draw) -> str:
    """An item field path (pluck, list-min/max); rarely a malformed one."""
    return pick(draw, BAD_ITEM_PATHS if rarely(draw) else ITEM_PATHS)


def array(draw, scope: Scope):
    """An ``array`` field: a literal list, or an expression that should give one."""
    if draw(st.booleans()):
        return draw(st.lists(items, max_size=4) | st.lists(numbers, max_size=4))
    if rarely(draw, 30):
        return draw(json_values)
    node = pick(draw, (*scope.ancestors, "$trigger", "$props", "$inputs"))
    if node == "$inputs" and "items" in scope.inputs:
        return "{{$inputs.items}}"
    node_type = NODE_TYPES.get(scope.kinds.get(node))
    fields = ["items", "values", "filtered", "output"]
    if node_type is not None and not rarely(draw, 20):  # mostly a field it can have
        result = node_type.result
        if result.get("additionalProperties", True) is False:
            fields = [f for f in fields if f in result["properties"]]
    if node.startswith("$") or not fields:
        return pick(draw, ["{{$trigger.body.items}}", "{{$props.list}}"])
    return f"{{{{{node}.result.{pick(draw, fields)}}}}}"


# -- conditions ------------------------------------------------------------------------

def operand(draw, scope: Scope, op: str):
    """The right-hand side of ``op``, mostly of the type it needs."""
    if op in ("$in", "$nin", "$notIn") and not rarely(draw):
        return draw(st.lists(scalars | numbers, max_size=3))
    if op in ("$exists", "$notExists") and not rarely(draw):
        return draw(st.booleans())
    return value(draw, scope, scalars | numbers | symbols, one_in=5)


def comparison(draw, scope: Scope, item: bool) -> dict:
    """``{left: {$op: right}}``, or the older ``{$op: [left, right]}``."""
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=2, unique=True))
    if rarely(draw, 4):  # the older form {"$op": [left, right]}
        left = pick(draw, ["{{@amount}}", "{{@asset.symbol}}"]) if item else template(draw, scope)
        return {ops[0]: [left, operand(draw, scope, ops[0])]}
    left = pick(draw, ITEM_KEYS) if item and draw(st.booleans()) else hole(draw, scope)
    return {left: {op: operand(draw, scope, op) for op in ops}}


def condition(draw, scope: Scope, item: bool, depth: int = 0):
    """A condition of SPEC §5 (``item``: filter's, keyed by item fields); rarely malformed."""
    if rarely(draw):
        return pick(draw, BAD_CONDITIONS)
    elements = []
    for _ in range(draw(st.integers(0, 3))):
        nested = depth < 2 and rarely(draw, 5)
        elements.append(condition(draw, scope, item, depth + 1) if nested
                        else comparison(draw, scope, item))
    return {pick(draw, ["$and", "$or"]): elements}


# -- payloads, one builder per node type -----------------------------------------------

def url(draw, scope: Scope) -> str:
    """A URL the guard refuses before connecting, or one that does not parse."""
    if not rarely(draw, 4):
        return pick(draw, BLOCKED_URLS + NOT_URLS)
    # The expression follows the path's slash: it cannot change where the URL goes.
    return pick(draw, BLOCKED_URLS) + template(draw, scope)


def headers(draw) -> dict:
    """Outbound headers; rarely a bad name or a line break in a value."""
    names = st.sampled_from(["X-Id", "Authorization", "content-type", "X-Api-Key"])
    if rarely(draw):
        names = st.sampled_from(["bad name", "é", ""])
    values = st.just("a\r\nb") if rarely(draw) else texts | st.integers()
    return draw(st.dictionaries(names, values, max_size=3))


def outbound(draw, scope: Scope, webhook: bool) -> dict:
    """An ``http-request`` or ``send-webhook`` payload."""
    payload = {"url": url(draw, scope), **some(
        draw, headers=lambda: headers(draw), body=lambda: value(draw, scope, json_values))}
    if webhook:
        return {**payload, **some(draw, maxRetries=lambda: in_range(draw, 0, 10, [11]))}
    return {**payload, **some(
        draw, method=lambda: pick(draw, ["GET", "post", "HEAD", "DELETE"] * 4 + ["BREW"]),
        query=lambda: draw(st.dictionaries(st.sampled_from(["q", "page"]), scalars, max_size=2)),
        timeout=lambda: in_range(draw, 1, 500, [60_001]),
        followRedirects=lambda: draw(st.booleans()), failOnStatus=lambda: draw(st.booleans()),
        maxResponseSize=lambda: in_range(draw, 0, 10 * 2**20, [10 * 2**20 + 1]))}


def one_of_keys(draw, common: list[str], rare: list[str]) -> list[str]:
    """The keys to give among alternatives: usually one of ``common``."""
    choice = pick(draw, rare) if rarely(draw, 40) else pick(draw, common)
    return {"both": common, "none": []}.get(choice, [choice])


def payload(draw, kind: str, scope: Scope):
    """A payload for a node of type ``kind``: its real fields, values sometimes expressions."""
    if rarely(draw, 100):
        return draw(json_values)  # not necessarily an object
    builders = {
        "log": lambda: {"message": value(draw, scope, texts | json_values)},
        "if": lambda: {"condition": condition(draw, scope, item=False)},
        "filter": lambda: {"array": array(draw, scope), **{
            key: condition(draw, scope, item=True)
            for key in one_of_keys(draw, ["filter", "condition"], ["both", "none"])}},
        "pluck": lambda: {"array": array(draw, scope), **{
            key: item_path(draw) if key == "field"
            else [item_path(draw) for _ in range(draw(st.integers(1, 3)))]
            for key in one_of_keys(draw, ["field", "fields"], ["both", "none"])}},
        "format": lambda: {
            "data": array(draw, scope) if draw(st.booleans()) else draw(
                st.dictionaries(st.sampled_from(NAMES), scalars, max_size=3)),
            "template": "".join(pick(draw, TEMPLATE_PARTS) if draw(st.booleans())
                                else template(draw, scope) for _ in range(draw(st.integers(0, 3)))),
            **some(draw, separator=lambda: draw(texts) if not rarely(draw) else 5)},
        "regex": lambda: {
            "pattern": value(draw, scope, st.sampled_from(PATTERNS), one_in=8),
            **{key: value(draw, scope, texts) for key in one_of_keys(
                draw, ["text", "input"], ["both", "none"])},
            **some(draw, **{"global": lambda: draw(st.booleans()) if not rarely(draw) else 1})},
        "code-transform": lambda: {"code": pick(draw, CODES), **some(
            draw, input=lambda: value(draw, scope, json_values),
            timeout=lambda: in_range(draw, 1, 300, [0, 10_001]))},
        "delay": lambda: {"delayMs": in_range(draw, 0, 5, [-1, 60_001, "5", 1.5])},
        "http-request": lambda: outbound(draw, scope, webhook=False),
        "send-webhook": lambda: outbound(draw, scope, webhook=True),
        "convert-to-wei": lambda: {"value": value(draw, scope, decimal_texts | numbers), **some(
            draw, decimals=lambda: in_range(draw, 0, 77, [-1, 78, "18", None]))},
        "convert-from-wei": lambda: {"wei": value(draw, scope, st.integers().map(str)
                                                  | st.integers() | decimal_texts), **some(
            draw, decimals=lambda: in_range(draw, 0, 77, [-1, 78, 1.5]))},
        "list-min": lambda: {"array": array(draw, scope),
                             **some(draw, field=lambda: item_path(draw))},
        "generate-id": lambda: some(
            draw, format=lambda: pick(draw, ["uuid", "shortid"] * 8 + ["ulid"]),
            length=lambda: in_range(draw, 4, 32, [3, 33, "8"])),
        "hello-world": lambda: some(draw, name=lambda: value(draw, scope, texts)),
        "manual": lambda: draw(triggers),  # under the request's payload in the root's result
    }
    builders["list-max"] = builders["list-min"]
    out = builders[kind]() if kind in builders else {"message": "odd"}
    if rarely(draw, 10):
        out[pick(draw, ["unknownKey", "note", "description"])] = draw(json_values)
    return out


# -- definitions and run bodies ----------------------------------------------------------

node_ids = st.text("ABCXYZabcnorltux0123456789_-", min_size=1, max_size=10)
ODD_IDS = ("bad id", "a.b", "x" * 65, "", "é")
ODD_RUN_IDS = ("run-", "run_", "x", "run_" + "a" * 65, "run_é", 5)


def graph(draw) -> tuple[list[str], dict[str, list[str]]]:
    """Node ids in a random topological order, root first, and each node's parents."""
    count = MAX_NODES if rarely(draw, 40) else draw(st.integers(1, MAX_NODES - 1))
    ids = ["root"]
    for name in draw(st.lists(node_ids, min_size=count, max_size=count)):
        while name in ids:  # unique without a filter: filters make hypothesis give up
            name += "_"
        ids.append(name)
    if rarely(draw, 40):
        ids[-1] = pick(draw, ODD_IDS)
    parents: dict[str, list[str]] = {"root": []}
    for i, node in enumerate(ids[1:], start=1):
        parents[node] = draw(st.lists(st.sampled_from(ids[:i]), min_size=1, max_size=3,
                                      unique=True))
    if rarely(draw, 30):
        parents[pick(draw, ids[1:])] = []  # unreachable from root
    return ids, parents


def ancestors_of(ids: list[str], parents: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """Each node's ancestors, over forward edges only."""
    found: dict[str, set[str]] = {}
    for node in ids:
        found[node] = set(parents[node]).union(*(found[p] for p in parents[node]))
    return {node: tuple(n for n in ids if n in found[node]) for node in ids}


def wrong_edge(draw, ids: list[str], children: dict[str, list]) -> None:
    """Now and then an edge that is refused: backwards (maybe a cycle), self, unknown, twice."""
    if len(ids) < 2 or not rarely(draw, 20):
        return
    later = draw(st.integers(1, len(ids) - 1))
    node, kind = ids[later], pick(draw, ["back", "self", "ghost", "twice", "not a list"])
    if kind == "back":
        children[node].append(ids[draw(st.integers(0, later - 1))])
    elif kind in ("self", "ghost"):
        children[node].append(node if kind == "self" else "ghost")
    elif kind == "twice" and children["root"]:
        children["root"].append(children["root"][0])
    elif kind == "not a list":
        children[node] = node


def kinds_of(draw, ids: list[str]) -> dict[str, str]:
    """Each node's type: known ones, rarely an unknown one or a root that is not manual."""
    kinds = {"root": pick(draw, ["log", "if"]) if rarely(draw, 40) else "manual"}
    for node in ids[1:]:
        kinds[node] = pick(draw, ODD_TYPES if rarely(draw, 100) else TYPES)
    # Each code-transform may start a V8 helper process: a few per run are plenty.
    for node in [n for n in ids if kinds[n] == "code-transform"][2:]:
        kinds[node] = "log"
    return kinds


def node_extras(draw) -> dict:
    """``continueOnError``, ``retry``, ``timeoutMs`` and keys that are ignored."""
    retry = lambda: some(  # noqa: E731
        draw, maxAttempts=lambda: in_range(draw, 1, 3, [0, 11]),
        initialDelayMs=lambda: draw(st.integers(0, 20)),
        backoffRate=lambda: draw(st.floats(1, 2)) if not rarely(draw) else 0.5,
        maxDelayMs=lambda: draw(st.integers(0, 50)),
        retryOn=lambda: draw(st.lists(st.sampled_from(ERROR_CODES), max_size=2)))
    return some(draw, continueOnError=lambda: draw(st.booleans()) if not rarely(draw) else "yes",
                retry=retry, timeoutMs=lambda: in_range(draw, 1, 500, [0], 200),
                description=lambda: draw(texts))


def branch(draw, under_if: bool):
    """``then``/``else`` under an ``if`` (rarely wrong or missing), else none (rarely one)."""
    if under_if:
        return pick(draw, [None, "x", 1]) if rarely(draw) else pick(draw, ["then", "else"])
    return pick(draw, ["then", "else"]) if rarely(draw, 300) else None


def declarations(draw) -> dict:
    """``inputSchema``, ``props`` and ``variableDefs``; rarely a malformed item."""
    inputs = [{"key": key, "type": pick(draw, INPUT_TYPES),
               **some(draw, required=lambda: rarely(draw, 4))}
              for key in draw(st.lists(st.sampled_from(INPUT_KEYS), max_size=2, unique=True))]
    if inputs and rarely(draw, 20):
        inputs[0] = pick(draw, BAD_INPUT_ITEMS)
    variables = [{"name": name, **some(draw, default=lambda: draw(json_values))}
                 for name in draw(st.lists(st.sampled_from(["v", "w"]), max_size=2))]
    props = draw(st.dictionaries(st.sampled_from(PROP_KEYS), prop_values, max_size=3))
    return {"inputSchema": inputs, "props": props, "variableDefs": variables}


@st.composite
def definitions(draw) -> dict:
    """A definition of a manual root and 1..19 nodes; now and then one that is refused."""
    ids, parents = graph(draw)
    kinds, ancestors = kinds_of(draw, ids), ancestors_of(ids, parents)
    children: dict[str, list] = {node: [c for c in ids if node in parents[c]] for node in ids}
    wrong_edge(draw, ids, children)
    declared = declarations(draw)
    names = {key: tuple(item.get(field) for item in declared[key] if isinstance(item, dict))
             for key, field in (("inputSchema", "key"), ("variableDefs", "name"))}
    nodes = {}
    for node in draw(st.permutations(ids)):
        scope = Scope(ancestors[node], tuple(ids), names["inputSchema"], tuple(declared["props"]),
                      names["variableDefs"], kinds)
        entry = {"type": kinds[node], "payload": payload(draw, kinds[node], scope),
                 "children": children[node], **node_extras(draw)}
        chosen = branch(draw, any(kinds[p] == "if" for p in parents[node]))
        if chosen is not None:
            entry["branch"] = chosen
        nodes[node] = entry
    return {"nodes": nodes, **declared, **some(
        draw, triggerNodeIds=lambda: ["root", "x"] if rarely(draw, 30) else ["root"],
        sensitivePropKeys=lambda: draw(st.lists(st.sampled_from(
            tuple(declared["props"]) or PROP_KEYS), min_size=1, max_size=2)),
        blockExpansions=dict, description=lambda: draw(texts))}


@st.composite
def run_ids(draw) -> object:
    """A well-formed ``runId`` from a small space (so some repeat); rarely a malformed one."""
    if rarely(draw, 20):
        return pick(draw, ODD_RUN_IDS)
    return "run_" + draw(st.text("abcXYZ0189_", min_size=1, max_size=20))


INPUT_VALUES = {"string": texts, "number": st.integers() | st.floats(allow_nan=False,
                                                                  allow_infinity=False),
                "boolean": st.booleans(), "array": st.lists(items, max_size=3),
                "object": st.dictionaries(st.sampled_from(NAMES), scalars, max_size=3)}


def trigger(draw, inputs: list) -> dict:
    """The request ``payload``: trigger data, usually with each declared input of its type."""
    data = draw(triggers)
    for item in inputs:
        key, kind = (item.get("key"), item.get("type")) if isinstance(item, dict) else (0, 0)
        if isinstance(key, str) and kind in INPUT_VALUES and not rarely(draw, 20):
            data[key] = draw(INPUT_VALUES[kind])
    return data


@st.composite
def run_bodies(draw) -> dict:
    """A valid-ish body whose run, if it starts, ends within ``MAX_RUN_MS``."""
    definition = draw(definitions())
    timeout = in_range(draw, 100, MAX_RUN_MS, [0, 60_001, -5, "100", 1.5, True, None], 30)
    body = {"definition": definition, "timeoutMs": timeout, **some(
        draw, propValues=lambda: draw(json_values if rarely(draw, 30) else st.dictionaries(
            st.sampled_from(PROP_KEYS), prop_values, max_size=2)))}
    if rarely(draw, 4):  # often enough to meet a used one, not so often that most are
        body["runId"] = draw(run_ids())
    if definition["inputSchema"] or draw(st.booleans()):
        body["payload"] = (draw(json_values) if rarely(draw, 30)
                           else trigger(draw, definition["inputSchema"]))
    return body


# -- raw requests ------------------------------------------------------------------------

class RawRequest:
    """A body and its content type (a plain class: hypothesis prints dataclasses in full)."""

    def __init__(self, data: bytes, content_type: str | None, request_id: str | None = None):
        self.data, self.content_type, self.request_id = data, content_type, request_id

    def __repr__(self) -> str:  # a 900 KB body would drown the report
        shown = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        return (f"RawRequest({shown!r} ({len(self.data)} bytes), {self.content_type!r}, "
                f"request_id={self.request_id!r})")


TOP_KEYS = ("definition", "payload", "propValues", "runId", "timeoutMs", "name")
ODD_KEYS = ("payload.x", "runId[0]", "_schema", "", "Definition", "definition ", "nodes",
            "propValues.a", "timeoutMs.0")
JSON_TYPES = ("application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
              "application/problem+json")
OTHER_TYPES = ("text/plain", "", None, "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x", "application/xml", "application/octet-stream")
HUGE_UNITS = ("x", "é", "{{", "{{a||", '{{"', "{{root.result.text}}", "{{ghost}}", "\\",
              "\u2028", "{{@x}}")
HUGE_SLOTS = ("payload", "propValues", "message", "regex", "format", "pluck", "code input",
              "runId", "node id", "key")
NUMBER_TEXTS = ("1e400", "-1e400", "1E999", "1e-400", "-0", "123456789012345678901234567890",
                "1" * 4301, "0.1e1", "1.0")
NUMBER_NODES = ('{"type": "log", "payload": {"message": "{{root.result.n}}"}}',
                '{"type": "log", "payload": {"message": %s}}',
                '{"type": "delay", "payload": {"delayMs": %s}}',
                '{"type": "convert-to-wei", "payload": {"value": %s, "decimals": 6}}',
                '{"type": "generate-id", "payload": {"length": %s}}',
                '{"type": "log", "timeoutMs": %s, "payload": {"message": "x"}}',
                '{"type": "log", "retry": {"backoffRate": %s}, "payload": {"message": "x"}}')
request_ids = (st.text("AZaz09._-", min_size=1, max_size=130)
               | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
JUNK = (b'{"a": NaN}', b'{"a": Infinity}', b"\xef\xbb\xbf{}", b'{"definition": {}} x',
        b'{"a": "\xff"}', b'{"a": 1}\x00', b"", b"null", b'"\\ud800"', b"{'a': 1}",
        b'{"a": 1, "a": 2}', b'\xef\xbb\xbf{"definition": {"nodes": {"root": {"type": "manual"'
        b'}}}, "timeoutMs": 100}')


def dumps(value) -> bytes:
    """JSON text as bytes (non-ASCII escaped, so lone surrogates pass)."""
    return json.dumps(value).encode()


def nested(depth: int, leaf=1):
    """``depth`` containers, objects and arrays in turn, around ``leaf``."""
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"a": leaf}
    return leaf


def one_node(node: dict, **top) -> dict:
    """A body whose definition is a root and ``node`` (id ``n``)."""
    nodes = {"root": {"type": "manual", "children": ["n"]}, "n": node}
    return {"definition": {"nodes": nodes}, "payload": {"text": "aaaa"}, "timeoutMs": 1000,
            **top}


def deep(draw) -> bytes:
    """A body nested 1..70 levels (around SPEC §6's 64), or far deeper, somewhere."""
    depth = draw(st.integers(1, 70) | st.sampled_from([200, 100_000]))
    if depth > 1000:  # too deep to build as objects: write the text directly
        return b'{"payload": ' + b"[" * depth + b"]" * depth + b"}"
    where = pick(draw, ["top", "payload", "root payload", "props"])
    if where == "top":
        return dumps(nested(depth))
    body = one_node({"type": "log", "payload": {"message": "hi"}})
    slot = {"payload": body["payload"], "props": body["definition"].setdefault("props", {}),
            "root payload": body["definition"]["nodes"]["root"].setdefault("payload", {})}[where]
    slot["deep"] = nested(depth)
    return dumps(body)


def huge(draw) -> bytes:
    """A body under 1 MiB holding one long string where a node or a check reads it."""
    unit, slot = pick(draw, HUGE_UNITS), pick(draw, HUGE_SLOTS)
    copies = 2 if slot == "node id" else 1  # the id is a key and a child
    text = unit * draw(st.integers(0, 900_000 // copies // len(json.dumps(unit))))
    node = {"message": {"type": "log", "payload": {"message": text}},
            "regex": {"type": "regex", "payload": {"text": text, "global": True,
                                                   "pattern": pick(draw, ["", "a*b|a", "(x)"])}},
            "format": {"type": "format", "payload": {"data": [{}, {}], "template": text}},
            "pluck": {"type": "pluck", "payload": {"array": [{}], "field": text}},
            "code input": {"type": "code-transform", "payload": {"code": CODES[2], "input": text}},
            }.get(slot, {"type": "log", "payload": {"message": "hi"}})
    body = one_node(node)
    if slot in ("payload", "propValues"):
        body[slot] = {"text": text}
    elif slot == "runId":
        body["runId"] = "run_" + text
    elif slot == "key":
        body[text] = 1
    elif slot == "node id":
        nodes = body["definition"]["nodes"]
        nodes[text] = nodes.pop("n")
        nodes["root"]["children"] = [text]
    return dumps(body)


def edge_numbers(draw) -> bytes:
    """Number literals at the edges of what a double (and Python) can hold."""
    number = pick(draw, NUMBER_TEXTS)
    node = pick(draw, NUMBER_NODES).replace("%s", number)
    return ('{"definition": {"nodes": {"root": {"type": "manual", "children": ["n"]}, '
            f'"n": {node}}}}}, "payload": {{"n": {number}}}, "timeoutMs": 1000}}').encode()


def corrupted(draw) -> bytes:
    """A valid-ish body with one top-level part wrong."""
    body = draw(run_bodies())
    how = pick(draw, ["field", "odd key", "drop", "list", "nodes", "runId"])
    if how in ("field", "odd key"):
        body[pick(draw, TOP_KEYS[:5] if how == "field" else ODD_KEYS)] = draw(json_values)
    elif how == "drop":
        body.pop(pick(draw, ["definition", "runId"]), None)
    elif how == "list":
        return dumps([body])
    elif how == "nodes":
        body["definition"]["nodes"] = draw(json_values)
    else:
        body["runId"] = draw(run_ids())
    return dumps(body)


@st.composite
def raw_requests(draw) -> RawRequest:
    """A body and content type that a careless client might send."""
    kind = pick(draw, ["json", "object", "corrupted", "deep", "huge", "numbers", "junk"])
    if kind == "json":
        data = dumps(draw(json_values))
    elif kind == "object":
        data = dumps(draw(st.dictionaries(st.sampled_from(TOP_KEYS + ODD_KEYS), json_values,
                                          max_size=6)))
    elif kind == "junk":
        data = draw(st.binary(max_size=64)) if draw(st.booleans()) else pick(draw, JUNK)
    else:
        data = {"corrupted": corrupted, "deep": deep, "huge": huge,
                "numbers": edge_numbers}[kind](draw)
    content_type = pick(draw, OTHER_TYPES if rarely(draw, 8) else JSON_TYPES)
    request_id = draw(st.none() | request_ids) if rarely(draw, 4) else None
    return RawRequest(data, content_type, request_id)
