"""The expression language of payload strings (SPEC §4).

A payload string is a *template*: literal text with ``{{ … }}`` holes. A hole
holds one or more *terms* separated by ``||``; a term is a JSON literal or a
*path* (a head such as ``root``, ``$nodes`` or ``$props`` followed by dot,
numeric and bracket segments). Nothing is ever evaluated as code.

Three pure operations, all over plain JSON values:

- ``parse(text)`` turns a string into a ``Template`` (or raises
  ``ExpressionError`` naming the bad hole; ``parse_each`` names every bad hole,
  for validation's report);
- ``references(text)`` lists the paths a string reads, for static checks
  (validation checks each names an ancestor);
- ``resolve(value, lookup)`` replaces every hole in every string of a JSON
  value, keeping the type of a string that is one hole and nothing else.

A node's payload is resolved before every attempt of every run, the same
payload again and again: ``compile_payload`` works out once what ``resolve``
would do with it (which strings hold holes, each parsed, each container's
fixed parts) and gives a resolver that only looks values up.

A numeric segment is an ``int`` only when it is a canonical index (``0``, or
digits without a leading zero); ``01`` stays the text ``"01"``, so on an object
every segment names the key exactly as written and only canonical indexes read
arrays.

``{{@field}}`` holes belong to the ``format`` and ``filter`` nodes: they are kept
as literal text and listed in ``Template.item_holes`` (validation rejects them
anywhere else).
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .jsonread import finite_float
from .jstext import to_text
from .textcache import cache_short_texts

MISSING = object()  # a path that leads nowhere (distinct from a JSON null)

Segment = str | int


class ExpressionError(ValueError):
    """A ``{{ … }}`` hole that does not parse."""


@dataclass(frozen=True)
class Path:
    """``head.seg.seg``: ``head`` is a node id or a ``$`` namespace."""

    segments: tuple[Segment, ...]

    # Kept once worked out: a path is parsed once and read in every run.
    @functools.cached_property
    def head(self) -> str:
        return str(self.segments[0])

    @functools.cached_property
    def rest(self) -> tuple[Segment, ...]:
        """The segments after the head."""
        return self.segments[1:]

    @functools.cached_property
    def key(self) -> str | None:
        """The last segment of ``head.field.key``, the usual path, when it names an
        object's key (None for any other path)."""
        if len(self.segments) == 3 and self.segments[2].__class__ is str:
            return self.segments[2]
        return None

    def __str__(self) -> str:
        return ".".join(str(s) for s in self.segments)


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Hole:
    """One ``{{ … }}``: terms tried left to right until one is not null."""

    terms: tuple[Path | Literal, ...]
    source: str


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Hole, ...]
    item_holes: tuple[str, ...] = ()  # each {{@field}} as written, kept in the text

    @property
    def holes(self) -> list[Hole]:
        return [p for p in self.parts if isinstance(p, Hole)]

    @property
    def single(self) -> Hole | None:
        """The hole when the whole string is exactly one hole."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Hole):
            return self.parts[0]
        return None


# The rest of a hole that holds a quote after "{{": up to the first "}}" that is not
# inside a quoted string (a hole without a quote ends at its first "}}"). Its
# alternatives start with different characters, so a hole that never closes is
# scanned in linear time. No possessive quantifiers: Debian 12's Python (3.11.2)
# matches them wrongly (this pattern with "*+" found no hole in "{{a}}").
_HOLE_REST = re.compile(r'((?:[^}"]|"(?:[^"\\]|\\.)*"|\}(?!\}))*)\}\}', re.S)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"\$?[A-Za-z0-9_-]+")
# The usual hole, a dotted path of names, read in one match instead of token by token.
_PLAIN_PATH = re.compile(r"\s*(\$?[A-Za-z_][A-Za-z0-9_-]*(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*")
_INDEX = re.compile(r"\d+")
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]*")
# Array literals are nested at most this deep (a request's JSON depth is bounded too).
MAX_LITERAL_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


# Literals: strict JSON (no NaN or Infinity, no number beyond a double, as a request's
# own JSON), strings and arrays scanned from "\"" or "[".
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=finite_float)


def is_template(text: str) -> bool:
    """Cheap test: could this string hold a hole at all?"""
    return "{{" in text


@cache_short_texts(maxsize=4096)
def parse(text: str) -> Template:
    """Split ``text`` into literal parts and parsed holes."""
    parts: list[str | Hole] = []
    item_holes: list[str] = []
    pos = 0
    for start, end, body in _holes(text):
        if body.lstrip().startswith("@"):
            item_holes.append(text[start:end])  # the format/filter node's, kept as text
            continue
        if start > pos:
            parts.append(text[pos:start])
        parts.append(_parse_hole(body, text[start:end]))
        pos = end
    if pos < len(text) or not parts:
        parts.append(text[pos:])
    return Template(tuple(parts), tuple(item_holes))


def index_or_key(text: str) -> Segment:
    """A path segment as written: an ``int`` only when it is a canonical index."""
    return int(text) if _CANONICAL_INDEX.fullmatch(text) else text


def parse_each(text: str) -> tuple[list[Hole], tuple[str, ...], list[str]]:
    """Every hole of ``text`` read on its own, for reporting (``parse`` stops at the
    first bad one): the holes that parse, the item holes, and what is wrong with each
    hole that does not."""
    holes: list[Hole] = []
    item_holes: list[str] = []
    errors: list[ExpressionError] = []
    for start, end, body in _holes(text, errors):
        if body.lstrip().startswith("@"):
            item_holes.append(text[start:end])
            continue
        try:
            holes.append(_parse_hole(body, text[start:end]))
        except ExpressionError as error:
            errors.append(error)
    return holes, tuple(item_holes), [str(e) for e in errors]


def _holes(text: str, errors: list[ExpressionError] | None = None):
    """``(start, end, body)`` of each hole; a "{{" that never closes is text.

    A hole with a quote that never closes raises ``ExpressionError``; with ``errors``
    given, the error is added there instead and the holes after it are read up to
    their first "}}", quotes or not: the unclosed quote ran to the end of the text,
    and reading each later hole the same way would take quadratic time.
    """
    pos, plain = text.find("{{"), False
    while pos >= 0:
        close = text.find("}}", pos + 2)
        if close < 0:
            return
        if plain or text.find('"', pos + 2, close) < 0:  # no string inside: the first "}}"
            end, body = close + 2, text[pos + 2:close]
        else:
            found = _HOLE_REST.match(text, pos + 2)
            if found is None:  # it closes, but a quote inside does not
                error = ExpressionError(f"{text[pos:pos + 40]}…: unterminated string literal")
                if errors is None:
                    raise error
                errors.append(error)
                pos, plain = text.find("{{", close + 2), True
                continue
            end, body = found.end(), found.group(1)
        yield pos, end, body
        pos = text.find("{{", end)


def _parse_hole(body: str, source: str) -> Hole:
    plain = _PLAIN_PATH.fullmatch(body)
    if plain is not None and plain.group(1) not in ("true", "false", "null"):
        names = [name.strip() for name in plain.group(1).split(".")]
        return Hole((Path((names[0], *map(index_or_key, names[1:]))),), source)
    scanner = _Scanner(body, source)
    terms = [scanner.term()]
    while scanner.eat("||"):
        terms.append(scanner.term())
    scanner.end()
    return Hole(tuple(terms), source)


class _Scanner:
    """A tiny recursive-descent reader for the inside of one hole."""

    def __init__(self, text: str, source: str):
        self.text, self.source, self.pos = text, source, 0

    def fail(self, why: str) -> ExpressionError:
        source = self.source if len(self.source) <= 80 else self.source[:77] + "..."
        return ExpressionError(f"{source}: {why}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def eat(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def end(self) -> None:
        self.skip_space()
        if self.pos < len(self.text):
            rest = self.text[self.pos:self.pos + 40]
            more = "…" if self.pos + 40 < len(self.text) else ""
            raise self.fail(f"unexpected {rest!r}{more}")

    def term(self) -> Path | Literal:
        self.skip_space()
        if self.peek('"'):
            return Literal(self.string())
        if self.peek("["):
            return Literal(self.array())
        start = self.pos
        number = self.match(_NUMBER)
        if number is not None and self.at_term_end():
            try:
                return Literal(_DECODER.decode(number))
            except ValueError:  # 1e400: no double holds it, no answer could write it
                raise self.fail(f"the number {number[:40]} is out of range") from None
        self.pos = start
        name = self.match(_NAME)
        if name is None:
            raise self.fail("expected a path or a JSON literal")
        if name in ("true", "false", "null") and self.at_term_end():
            return Literal(json.loads(name))
        return Path(tuple([name, *self.segments()]))

    def at_term_end(self) -> bool:
        return self.peek("||") or self.pos == len(self.text)

    def segments(self) -> list[Segment]:
        segments: list[Segment] = []
        while True:
            if self.eat("."):
                self.skip_space()
                segment = self.match(_NAME)
                if segment is None or segment.startswith("$"):
                    raise self.fail("expected a name after '.'")
                segments.append(index_or_key(segment))
            elif self.eat("["):
                self.skip_space()
                if self.peek('"'):
                    segments.append(self.string())
                else:
                    index = self.match(_INDEX)
                    if index is None:
                        raise self.fail("expected a number or a quoted key in '[ ]'")
                    segments.append(index_or_key(index))
                if not self.eat("]"):
                    raise self.fail("expected ']'")
            else:
                return segments

    def match(self, pattern: re.Pattern) -> str | None:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def string(self) -> str:
        try:
            value, end = _DECODER.raw_decode(self.text, self.pos)
        except json.JSONDecodeError:
            raise self.fail("unterminated or malformed string literal") from None
        self.pos = end
        return value

    def array(self) -> list:
        """A JSON array literal (``[]``, ``[1, "a"]``); it must end the term."""
        try:
            value, end = _DECODER.raw_decode(self.text, self.pos)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, 1e400
            raise self.fail("malformed array literal") from None
        self.pos = end
        if not self.at_term_end():
            raise self.fail("expected '||' or the end after an array literal")
        if _depth(value) > MAX_LITERAL_DEPTH:
            raise self.fail(f"an array literal is nested at most {MAX_LITERAL_DEPTH} deep")
        return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                 else item))
    return deepest


def references(text: str) -> list[tuple[str, Path]]:
    """``(hole as written, path)`` for every path the string reads; ExpressionError if a
    hole does not parse. Literal fallbacks read nothing."""
    return [(hole.source, term) for hole in parse(text).holes for term in hole.terms
            if isinstance(term, Path)]


Lookup = Callable[[Path], Any]


class Budget:
    """How much one resolution may produce, in characters of JSON.

    A short payload can ask for a lot: ten thousand copies of a large result,
    inside text or as values. What each hole produces is counted, and past the
    limit resolution stops with ``ExpressionError``.
    """

    __slots__ = ("_calls", "_check", "_sizes", "left", "limit")  # one made per attempt

    def __init__(self, limit: int, check: Callable[[], None] | None = None,
                 sizes: dict[int, tuple[int, Any]] | None = None):
        self.limit, self.left = limit, limit
        # id → (JSON size, the container) of containers seen, the container kept so its
        # id names it while the entry lasts; ``sizes``: the caller's, shared by budgets
        # that read the same values (a run's nodes reading one result: measured once).
        self._sizes = {} if sizes is None else sizes
        # Called now and then (it raises at the run's deadline): a payload of many
        # small holes is cheap per hole but not in all.
        self._check, self._calls = check, 0

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise ExpressionError(f"the resolved payload would exceed {self.limit} characters")
        self._calls += 1
        if self._check is not None and not self._calls & 255:
            self._check()

    def spend_size(self, value: Any) -> None:
        """``spend(size(value))`` in one call (every lone hole spends its value's size)."""
        kind = value.__class__
        if kind is str:
            self.left -= len(value) + 2
        elif kind is list or kind is dict:  # size(value), without the call
            known = self._sizes.get(id(value))
            if known is None:
                known = self._sizes[id(value)] = (len(_json_text(value)), value)
            self.left -= known[0]
        else:
            self.left -= self.size(value)
        if self.left < 0:
            raise ExpressionError(f"the resolved payload would exceed {self.limit} characters")
        self._calls += 1
        if self._check is not None and not self._calls & 255:
            self._check()

    def afford(self, value: Any) -> None:
        """Fail before writing ``value`` into text when its JSON alone is over the budget
        (text is never longer than the JSON, so nothing large is built in vain)."""
        if isinstance(value, (dict, list)) and self.size(value) > self.left:
            self.spend(self.size(value))

    def size(self, value: Any) -> int:
        """The length of ``value`` as JSON (memoised: results are shared)."""
        if isinstance(value, str):
            return len(value) + 2
        if not isinstance(value, (dict, list)):
            return 5 if value is None or isinstance(value, bool) else len(str(value))
        known = self._sizes.get(id(value))
        if known is None:
            known = self._sizes[id(value)] = (len(_json_text(value)), value)
        return known[0]


# Any value a handler returns is measured: keys JSON cannot hold are skipped, odd types
# written as text, rather than failing the run.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, skipkeys=True)


def _json_text(value: dict | list) -> str:
    """``_JSON.encode(value)``, calling the C encoder directly (as ``encode`` does, less
    the Python around it). One encoder serves every call: without circular-reference
    marks (``markers`` None), as state.dumps's — values are JSON trees, never cyclic."""
    if _ENCODE is None:
        return _JSON.encode(value)
    return "".join(_ENCODE(value, 0))


_ENCODE = json.encoder.c_make_encoder(
    None, str, json.encoder.encode_basestring, None, ":", ",", False, True, True
) if json.encoder.c_make_encoder else None


def resolve(value: Any, lookup: Lookup, budget: Budget | None = None) -> Any:
    """A copy of ``value`` with every hole replaced (object keys untouched)."""
    if isinstance(value, str):
        return resolve_string(value, lookup, budget) if is_template(value) else value
    if isinstance(value, dict):
        return {k: resolve(v, lookup, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup, budget) for v in value]
    return value


def resolve_string(text: str, lookup: Lookup, budget: Budget | None = None) -> Any:
    """Resolve one string: a lone hole keeps its type, otherwise text."""
    template = parse(text)
    single = template.single
    if single is not None:
        value = evaluate(single, lookup)
        if budget is not None:
            budget.spend(budget.size(value))
        return None if value is MISSING else value
    out = []
    for part in template.parts:
        if isinstance(part, str):
            piece = part
        else:
            value = evaluate(part, lookup)
            if budget is not None:
                budget.afford(value)
            piece = to_text(None if value is MISSING else value)
        if budget is not None:
            budget.spend(len(piece))
        out.append(piece)
    return "".join(out)


def evaluate(hole: Hole, lookup: Lookup) -> Any:
    """The first term that is neither null nor missing, else the last one."""
    value: Any = MISSING
    for term in hole.terms:
        if isinstance(term, Literal):
            # An array literal lives in the parse cache: each use gets its own copy.
            value = copy.deepcopy(term.value) if isinstance(term.value, list) else term.value
        else:
            value = lookup(term)
        if value is not None and value is not MISSING:
            return value
    return value


def walk(value: Any, segments: tuple[Segment, ...]) -> Any:
    """Follow ``segments`` into a JSON value; ``MISSING`` where it leads nowhere."""
    for segment in segments:
        if isinstance(value, dict):
            value = value.get(segment if segment.__class__ is str else str(segment), MISSING)
        elif isinstance(value, list) and isinstance(segment, int):
            value = value[segment] if segment < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


# -- compiled payloads ----------------------------------------------------------------

Resolver = Callable[[Lookup, Budget | None], Any]  # (lookup, budget) → the resolved value


def compile_payload(payload: Mapping[str, Any]) -> tuple[Resolver, frozenset[str]]:
    """``payload``'s resolution worked out once: a resolver that gives what
    ``resolve(payload, lookup, budget)`` gives (the same values, the same budget spent
    in the same order, the same errors), and the keys whose values hold no hole (they
    resolve to a copy of the value as written)."""
    if not isinstance(payload, dict):
        return (lambda lookup, budget=None: resolve(payload, lookup, budget)), frozenset()
    children = [(key, _compile(value)) for key, value in payload.items()]
    resolver = _compile_container(payload, children, dict)[0]
    return resolver, frozenset(key for key, (_, fixed, _) in children if fixed)


# What ``_compile`` gives for a value: a resolver (None: the value itself is the
# answer, an immutable scalar or a string without "{{"), whether the value holds no
# hole (it resolves to an equal value), and whether it holds no "{{" at all (resolving
# it only copies its containers; nothing is spent from the budget).
_Compiled = tuple[Resolver | None, bool, bool]


def _compile(value: Any) -> _Compiled:
    if isinstance(value, str):
        return _compile_string(value) if is_template(value) else (None, True, True)
    if isinstance(value, (dict, list)) and not _holds_braces(value):
        return _copier(value), True, True  # large literal data: one quick look, no more
    if isinstance(value, dict):
        return _compile_container(value, [(k, _compile(v)) for k, v in value.items()],
                                  dict)
    if isinstance(value, list):
        return _compile_container(value, [(i, _compile(v)) for i, v in enumerate(value)],
                                  list)
    return None, True, True


def _compile_container(value: dict | list, children: list[tuple[Any, _Compiled]],
                       kind: type) -> _Compiled:
    """A dict or list (``children``: each key or index, compiled): a new one in every
    resolution, its fixed items copied, the rest resolved in order (object keys are
    never resolved)."""
    fixed = all(child[1] for _, child in children)
    if all(child[2] for _, child in children):  # nothing to resolve: a copy
        return _copier(value), True, True
    base = kind(value)
    for key, (resolver, _, _) in children:
        if resolver is not None:
            base[key] = None  # a placeholder, so the copy keeps every key's position
    steps = tuple((key, resolver) for key, (resolver, _, _) in children
                  if resolver is not None)

    def resolve_container(lookup: Lookup, budget: Budget | None = None) -> Any:
        out = base.copy()
        for key, resolver in steps:
            out[key] = resolver(lookup, budget)
        return out
    return resolve_container, fixed, False


def _holds_braces(value: dict | list) -> bool:
    """Whether "{{" is anywhere in ``value`` (a key's counts too), read from its JSON text:
    much quicker than a walk over it."""
    try:
        return "{{" in _json_text(value)
    except (ValueError, TypeError, RecursionError):
        return True  # compiled part by part


def _copier(value: dict | list) -> Resolver:
    """A resolver of a container without "{{": a copy, shallow when nothing is nested."""
    if any(isinstance(item, (dict, list))
           for item in (value.values() if isinstance(value, dict) else value)):
        return lambda lookup, budget=None: _copy(value)
    kind = dict if isinstance(value, dict) else list
    return lambda lookup, budget=None: kind(value)


def _copy(value: Any) -> Any:
    """A JSON value with new containers (a fixed part of a payload, resolved)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _compile_string(text: str) -> _Compiled:
    try:
        template = parse(text)
    except ExpressionError:  # never in a checked plan: fails as resolve would, each time
        return (lambda lookup, budget=None: resolve_string(text, lookup, budget)), False, \
            False
    if not template.holes:  # text, {{@field}} holes and "{{" that never close
        def spend_text(lookup: Lookup, budget: Budget | None = None) -> str:
            if budget is not None:
                budget.spend(len(text))
            return text
        return spend_text, True, False
    single = template.single
    if single is not None:
        return _compile_single(single), False, False
    return _compile_text(template.parts), False, False


def _term_reader(hole: Hole) -> Callable[[Lookup], Any]:
    """``evaluate(hole, lookup)`` as a function of ``lookup``: for the usual hole, one
    path and no fallback, the lookup itself."""
    if len(hole.terms) == 1 and isinstance(hole.terms[0], Path):
        path = hole.terms[0]
        return lambda lookup: lookup(path)
    return lambda lookup: evaluate(hole, lookup)


def _compile_single(hole: Hole) -> Resolver:
    """A string that is one hole: its value, of its own type."""
    if len(hole.terms) == 1 and isinstance(hole.terms[0], Path):
        path = hole.terms[0]

        def resolve_path(lookup: Lookup, budget: Budget | None = None) -> Any:
            value = lookup(path)
            if budget is not None:
                budget.spend_size(value)
            return None if value is MISSING else value
        return resolve_path

    def resolve_hole(lookup: Lookup, budget: Budget | None = None) -> Any:
        value = evaluate(hole, lookup)
        if budget is not None:
            budget.spend_size(value)
        return None if value is MISSING else value
    return resolve_hole


def _compile_text(parts: tuple[str | Hole, ...]) -> Resolver:
    """Text with holes: each hole's value written as text (``resolve_string``)."""
    steps = tuple(part if isinstance(part, str) else _term_reader(part) for part in parts)

    def resolve_text(lookup: Lookup, budget: Budget | None = None) -> str:
        out = []
        for step in steps:
            if step.__class__ is str:
                piece = step
            else:
                value = step(lookup)
                if budget is not None:
                    budget.afford(value)
                piece = to_text(None if value is MISSING else value)
            if budget is not None:
                budget.spend(len(piece))
            out.append(piece)
        return "".join(out)
    return resolve_text
