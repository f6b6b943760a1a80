"""The expression language of payload strings (SPEC §4).

A payload string is a *template*: literal text with ``{{ … }}`` holes. A hole
holds one or more *terms* separated by ``||``; a term is a JSON literal or a
*path* (a head such as ``root``, ``$nodes`` or ``$props`` followed by dot,
numeric and bracket segments). Nothing is ever evaluated as code.

Three pure operations, all over plain JSON values:

- ``parse(text)`` turns a string into a ``Template`` (or raises
  ``ExpressionError`` naming the bad hole);
- ``references(text)`` lists the paths a string reads, for static checks
  (validation checks each names an ancestor);
- ``resolve(value, lookup)`` replaces every hole in every string of a JSON
  value, keeping the type of a string that is one hole and nothing else.

``{{@field}}`` holes belong to the ``format`` and ``filter`` nodes and are left
exactly as written.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

    @property
    def head(self) -> str:
        return str(self.segments[0])

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

    @property
    def holes(self) -> list[Hole]:
        return [p for p in self.parts if isinstance(p, Hole)]

    @property
    def single(self) -> Hole | None:
        """The hole when the whole string is exactly one hole."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Hole):
            return self.parts[0]
        return None


# The rest of a hole after "{{": up to the first "}}" that is not inside a quoted
# string. Possessive quantifiers keep a hole that never closes linear to scan.
_HOLE_REST = re.compile(r'((?:[^}"]|"(?:[^"\\]|\\.)*+"|\}(?!\}))*+)\}\}', re.S)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"\$?[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\d+")


def is_template(text: str) -> bool:
    """Cheap test: could this string hold a hole at all?"""
    return "{{" in text


@cache_short_texts(maxsize=4096)
def parse(text: str) -> Template:
    """Split ``text`` into literal parts and parsed holes."""
    parts: list[str | Hole] = []
    pos = 0
    for start, end, body in _holes(text):
        if body.strip().startswith("@"):
            continue  # {{@field}}: not ours, kept verbatim as literal text
        if start > pos:
            parts.append(text[pos:start])
        parts.append(_parse_hole(body, text[start:end]))
        pos = end
    if pos < len(text) or not parts:
        parts.append(text[pos:])
    return Template(_merge_literals(parts))


def _holes(text: str):
    """``(start, end, body)`` of each hole; a "{{" that never closes is text."""
    pos = text.find("{{")
    while pos >= 0:
        found = _HOLE_REST.match(text, pos + 2)
        if found is None:
            if text.find("}}", pos + 2) >= 0:  # it closes, but a quote inside does not
                raise ExpressionError(f"{text[pos:pos + 40]}…: unterminated string literal")
            return
        yield pos, found.end(), found.group(1)
        pos = text.find("{{", found.end())


def _merge_literals(parts: list[str | Hole]) -> tuple[str | Hole, ...]:
    merged: list[str | Hole] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return tuple(merged)


def _parse_hole(body: str, source: str) -> Hole:
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
            raise self.fail(f"unexpected {self.text[self.pos:]!r}")

    def term(self) -> Path | Literal:
        self.skip_space()
        if self.peek('"'):
            return Literal(self.string())
        start = self.pos
        number = self.match(_NUMBER)
        if number is not None and self.at_term_end():
            return Literal(json.loads(number))
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
                segments.append(int(segment) if segment.isdigit() else segment)
            elif self.eat("["):
                self.skip_space()
                if self.peek('"'):
                    segments.append(self.string())
                else:
                    index = self.match(_INDEX)
                    if index is None:
                        raise self.fail("expected a number or a quoted key in '[ ]'")
                    segments.append(int(index))
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
        decoder = json.JSONDecoder()
        try:
            value, end = decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError:
            raise self.fail("unterminated or malformed string literal") from None
        self.pos = end
        return value


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

    def __init__(self, limit: int):
        self.limit, self.left = limit, limit
        self._sizes: dict[int, int] = {}  # id → JSON size of containers seen

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise ExpressionError(f"the resolved payload would exceed {self.limit} characters")

    def size(self, value: Any) -> int:
        """The length of ``value`` as JSON (memoised: results are shared)."""
        if isinstance(value, str):
            return len(value) + 2
        if not isinstance(value, (dict, list)):
            return 5 if value is None or isinstance(value, bool) else len(str(value))
        known = self._sizes.get(id(value))
        if known is None:
            known = self._sizes[id(value)] = len(_JSON.encode(value))
        return known


# Any value a handler returns is measured: keys JSON cannot hold are skipped, odd types
# written as text, rather than failing the run.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, skipkeys=True)


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
            piece = to_text(None if value is MISSING else value)
        if budget is not None:
            budget.spend(len(piece))
        out.append(piece)
    return "".join(out)


def evaluate(hole: Hole, lookup: Lookup) -> Any:
    """The first term that is neither null nor missing, else the last one."""
    value: Any = MISSING
    for term in hole.terms:
        value = term.value if isinstance(term, Literal) else lookup(term)
        if value is not None and value is not MISSING:
            return value
    return value


def walk(value: Any, segments: tuple[Segment, ...]) -> Any:
    """Follow ``segments`` into a JSON value; ``MISSING`` where it leads nowhere."""
    for segment in segments:
        if isinstance(value, dict):
            value = value.get(str(segment), MISSING)
        elif isinstance(value, list) and isinstance(segment, int):
            value = value[segment] if segment < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value
