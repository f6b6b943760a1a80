"""``regex``: the first match of an RE2 pattern in a text, or every match.

Only RE2 (``google-re2``) ever sees a pattern: it matches in time linear in
the text, so a pattern such as ``(a+)+$`` cannot stall a worker the way it
does under Python's ``re`` (NOTES: 27 s, GIL held). ``google-re2`` has no
fallback to ``re``; RE2-only syntax errors (backreferences, look-around)
fail the node with ``INVALID_INPUT``.

A match is ``{"0": whole match, "1": group 1, …}`` and every named group also
appears under its name (so ``matches.year`` and ``matches.1`` both work); a
group that did not take part is null.

Not ``inline``: one search is linear, but ``global`` searches again from each
match's end, which can be quadratic (measured on 2 cores: ``a*b|a`` over
100,000 ``a`` took 12.4 s; the empty pattern over 1 MiB gave 1,000,001
matches in 5.7 s). On a pool thread the search is checked against the
attempt's limit between matches, and RE2 releases the GIL while it scans.
"""
from __future__ import annotations

import re2
from marshmallow import ValidationError, validates_schema
from marshmallow.validate import Length

from ..dialect import Bool, Str, presence_rule
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object

MAX_PATTERN_CHARS = 1024
# A global match of a pattern with many groups over a long text could build
# gigabytes of strings (``()`` × 500 over 1 MiB is 500 M values): cap the
# result. 100,000 values and 4 Mi characters keep a response to a few MiB.
MAX_VALUES = 100_000
MAX_CHARS = 4 * 2**20


class Payload(PayloadSchema):
    text = Str()
    input = Str()  # alias of ``text``; ``text`` wins when both are given
    pattern = Str(required=True, validate=Length(max=MAX_PATTERN_CHARS))
    global_ = Bool(data_key="global", load_default=False)

    @presence_rule
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _needs_text(self, data: dict, original: dict, **kwargs) -> None:
        if isinstance(original, dict) and "text" not in original and "input" not in original:
            raise ValidationError("Missing data for required field (or its alias 'input').",
                                  "text")


def run(data: dict, ctx: NodeContext) -> dict:
    """Search ``text`` for ``pattern``; every match when ``global``."""
    text = data["text"] if "text" in data else data["input"]
    regexp = _compile(data["pattern"])
    names = _names(regexp)
    found = _Budget()
    try:
        if not data["global_"]:
            match = regexp.search(text)
            if match is None:
                return {"matched": False, "matches": {}}
            return {"matched": True, "matches": found.take(_groups(match, regexp.groups, names))}
        matches = []
        for match in regexp.finditer(text):
            if ctx.cancelled.is_set():
                raise NodeError("TIMEOUT", "The search exceeded its time limit.", retryable=True)
            matches.append(found.take(_groups(match, regexp.groups, names)))
    except UnicodeEncodeError:
        raise NodeError("INVALID_INPUT", "text: Not valid Unicode (an unpaired surrogate).") \
            from None
    return {"matched": bool(matches), "matches": matches}


def _compile(pattern: str):
    options = re2.Options()
    options.log_errors = False  # RE2 would print every bad pattern to stderr
    try:
        regexp = re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0] if error.args else b"invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise NodeError("INVALID_INPUT", f"pattern: Not a valid RE2 pattern: {reason}.") \
            from None
    except UnicodeEncodeError:
        raise NodeError("INVALID_INPUT", "pattern: Not valid Unicode (an unpaired surrogate).") \
            from None
    finally:
        # re2.compile keeps the last 128 patterns, each with up to 8 MiB of DFA
        # memory: 128 heavy patterns left a worker at 421 MB (17 MB uncached).
        re2.purge()
    return regexp


def _names(regexp) -> list[tuple[int, str]]:
    """Named groups as ``(number, name)``; a name of digits would hide a number."""
    names = sorted((index, name) for name, index in regexp.groupindex.items())
    for _, name in names:
        if name.isdigit():
            raise NodeError("INVALID_INPUT",
                            f"pattern: Group name {name!r} is a number; name groups with a letter.")
    return names


def _groups(match, count: int, names: list[tuple[int, str]]) -> dict:
    values = {str(number): match.group(number) for number in range(count + 1)}
    for number, name in names:
        values[name] = values[str(number)]
    return values


class _Budget:
    """Counts what the matches hold and fails the node past the caps."""

    def __init__(self) -> None:
        self.values = self.chars = 0

    def take(self, groups: dict) -> dict:
        self.values += len(groups)
        self.chars += sum(len(v) for v in groups.values() if v is not None)
        if self.values > MAX_VALUES or self.chars > MAX_CHARS:
            raise NodeError("INVALID_INPUT", (
                f"The matches exceed {MAX_VALUES} values or {MAX_CHARS} characters; "
                "use a narrower pattern or no 'global'."))
        return groups


NODE = NodeType("regex", Payload, run, result=result_object(
    {"matched": {"type": "boolean"}, "matches": {"type": ["object", "array"]}}))
