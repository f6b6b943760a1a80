"""Redaction of secrets wherever data leaves the process (SPEC §9).

A key is secret when its lowercase form without ``-`` and ``_`` equals or ends
with one of ``SECRET_SUFFIXES``; its value becomes ``"[redacted]"``, whatever
its length. The sensitive values of a request — the values of secret keys
anywhere in it and the props named in ``sensitivePropKeys`` — are collected
once (``Redactor.for_request``): every string and number leaf of each, and the
compact JSON of each object or array. Each value of at least ``MIN_CHARS``
characters is replaced wherever it appears, whole or inside text, in keys too,
and in the forms it takes in JSON text, URLs, host names and Python's repr.

All those forms go into one Aho–Corasick automaton (leftmost-longest), so a
string is scanned once, in time linear in its length, however many secrets
there are. ``"[redacted]"`` is in the automaton too, as a match that is kept,
so redacting a value twice changes nothing. Handlers and expressions keep the
real values: only the response, the stored run and the logs are redacted.
"""
from __future__ import annotations

import contextvars
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import ahocorasick_rs

from .jstext import stringify, to_text
from .ticks import CHECK_EVERY, Tick, idle, ticks

if TYPE_CHECKING:
    from .plan import RunRequest

REDACTED = "[redacted]"
SECRET_SUFFIXES = ("authorization", "cookie", "password", "passwd", "passphrase", "secret",
                   "secrets", "token", "tokens", "apikey", "privatekey", "credential",
                   "credentials", "mnemonic", "seedphrase", "accesskey")
MIN_CHARS = 4  # shorter values would take ordinary words and numbers out of every text
MAX_PATTERN_CHARS = 1 << 20  # about half a second to build the automaton, 40 MB at most

# How app/outbound/urls.py quotes a URL's path and its query.
_URL_SAFE = ("/%:@!$&'()*+,;=~", "/?%:@!$&'()*+,;=~")
_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")  # written the same in JSON, URLs and repr
_HOST = re.compile(r"[\w.-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CREDENTIALS = re.compile(r"(?i)(?:basic|bearer|bot|token)\s+(\S+)")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")

# The running request's redactor (None: only secret keys to redact). Set by the API for
# the whole run; node threads inherit it with the rest of the context.
current: contextvars.ContextVar[Redactor | None] = contextvars.ContextVar("redactor",
                                                                          default=None)


MAX_PLAIN_KEYS = 4096
# Keys known not to be secret: a dict's keys are checked against it in one step. Only
# keys that is_secret_key found plain go in, so a key in it is never secret.
_plain_keys: set[str] = set()
# Exact classes of the scalars a JSON value holds: nothing in them to look through.
# (A value's class is told by ``type()`` first: one isinstance of a tuple costs more.)
_SCALARS = frozenset((str, int, float, bool, type(None)))


@functools.lru_cache(maxsize=4096)  # the same keys come back in every run
def is_secret_key(key: str) -> bool:
    """True for keys such as ``Authorization``, ``x-api-key``, ``aws_secret_access_key``."""
    return key.lower().replace("-", "").replace("_", "").endswith(SECRET_SUFFIXES)


def clip(text: str, limit: int, marker: str = "…") -> str:
    """``text`` redacted with the current request's redactor, then cut to ``limit``
    characters plus ``marker``: a cut never leaves the prefix of a secret behind."""
    redactor = current.get()
    if redactor is not None:
        text = redactor.text(text)
    return text if len(text) <= limit else text[:limit] + marker


@functools.cache
def _kept_forms() -> frozenset[str]:
    """``"[redacted]"`` as written in each form: matched, and kept as it is."""
    return frozenset(form for to in (str, *_FORMS) if (form := to(REDACTED)))


class Redactor:
    """Redacts secret keys and a request's sensitive values from JSON values and text."""

    def __init__(self, sensitive_values: Iterable[Any] = ()):
        sensitive_values = list(sensitive_values)
        if not sensitive_values:  # most runs: secret keys only, nothing to build
            self.numbers, self._replaced, self._matcher = frozenset(), 0, None
            self.keys_only = True  # only secret keys: text and scalars are kept as they are
            return
        patterns, numbers = _patterns(sensitive_values)
        self.numbers = frozenset(numbers)  # whole JSON numbers to replace
        keep = _kept_forms() if patterns else ()
        replace = [_SURROGATE.sub("\ufffd", form) for form in patterns if form not in keep]
        self._replaced = len(replace)  # matches of patterns from here on are kept
        self._matcher = ahocorasick_rs.AhoCorasick(
            [*replace, *keep], matchkind=ahocorasick_rs.MatchKind.LeftmostLongest,
            implementation=ahocorasick_rs.Implementation.NoncontiguousNFA,  # builds fastest
        ) if replace else None
        self.keys_only = self._matcher is None

    @classmethod
    def for_request(cls, request: RunRequest) -> Redactor:
        """The redactor of a run request: values of secret keys in its payload and
        ``propValues`` and in the definition's props and node payloads (``plan.secrets``),
        and the values of the ``sensitivePropKeys`` props."""
        plan = request.plan
        found: list[Any] = []
        _under_secret_keys(request.payload, found)
        if request.prop_values:
            _under_secret_keys(request.prop_values, found)
        found += plan.secrets
        if plan.sensitive_prop_keys:
            merged = {**plan.props, **request.prop_values}
            found += [merged[k] for k in plan.sensitive_prop_keys if k in merged]
        return cls(found)

    def text(self, text: str) -> str:
        """Free text (a log or error message) with every sensitive value replaced."""
        if self._matcher is None or len(text) < MIN_CHARS:
            return text
        try:
            matches = self._matcher.find_matches_as_indexes(text)
        except UnicodeEncodeError:  # a lone surrogate (valid in JSON): same length without
            matches = self._matcher.find_matches_as_indexes(_SURROGATE.sub("\ufffd", text))
        pieces: list[str] = []
        at = 0
        for pattern, start, end in matches:
            if pattern < self._replaced:
                pieces += (text[at:start], REDACTED)
                at = end
        if not pieces:
            return text
        pieces.append(text[at:])
        return "".join(pieces)

    def value(self, value: Any, check: Callable[[], None] | None = None) -> Any:
        """A redacted copy of a JSON value; ``check()``, when given, is called every
        ``ticks.CHECK_EVERY`` values visited (it raises to stop at the run's deadline).
        Without sensitive values, a value with no secret key is returned as it is."""
        if self._matcher is None:  # most runs: only secret keys to redact
            kind = type(value)
            if (kind is dict or kind is list or (kind not in _SCALARS
                                                 and isinstance(value, (dict, list)))) \
                    and _secret_key_in(value, check, CHECK_EVERY) < 0:
                return _without_secret_keys(value, ticks(check) if check is not None else None)
            return value  # most: looked through, kept as it is
        return self._value(value, ticks(check) if check is not None else idle)

    def _value(self, value: Any, tick: Tick) -> Any:
        tick()
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k): REDACTED if is_secret_key(k) else self._value(v, tick)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, tick) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value in self.numbers:
            return REDACTED
        return value



def _secret_key_in(value: dict | list, check: Callable[[], None] | None, left: int) -> int:
    """-1 when a key at any depth of ``value`` is secret, else how many containers are
    left before the next ``check()`` (called every ``CHECK_EVERY`` containers visited;
    ``left``: how many were left when this one was reached). This runs over every node's
    input and result, and most hold no secret key: it is written for the fewest steps."""
    left -= 1
    if not left:
        if check is not None:
            check()
        left = CHECK_EVERY
    if isinstance(value, dict):
        if not _plain_keys.issuperset(value) and not _all_plain(value):
            return -1
        value = value.values()
    for item in value:
        kind = type(item)
        if kind is dict or kind is list or (kind not in _SCALARS
                                            and isinstance(item, (dict, list))):
            left = _secret_key_in(item, check, left)
            if left < 0:
                return -1
    return left


def _all_plain(keys: dict) -> bool:
    """True when no key of ``keys`` is secret; they are then remembered as plain (a
    bounded set: made-up keys of many requests cannot grow it past ``MAX_PLAIN_KEYS``)."""
    for key in keys:
        if is_secret_key(key):
            return False
    if len(keys) <= MAX_PLAIN_KEYS:
        if len(_plain_keys) + len(keys) > MAX_PLAIN_KEYS:
            _plain_keys.clear()
        _plain_keys.update(keys)
    return True


def _without_secret_keys(value: Any, tick: Tick | None) -> Any:
    """A copy of ``value`` with the value of every secret key replaced."""
    if isinstance(value, dict):
        if tick is not None:
            tick()
        return {k: REDACTED if is_secret_key(k) else
                _without_secret_keys(v, tick) if isinstance(v, (dict, list)) else v
                for k, v in value.items()}
    if isinstance(value, list):
        if tick is not None:
            tick()
        return [_without_secret_keys(v, tick) if isinstance(v, (dict, list)) else v
                for v in value]
    return value


def definition_values(definition: dict) -> list:
    """The values of secret keys in a definition's ``props`` and node payloads: the part
    of a request's sensitive values that a checked definition (a cached plan) keeps."""
    found: list[Any] = []
    props = definition.get("props")
    _under_secret_keys(props if isinstance(props, dict) else {}, found)
    nodes = definition.get("nodes")
    for node in nodes.values() if isinstance(nodes, dict) else ():
        if isinstance(node, dict):
            _under_secret_keys(node.get("payload"), found)
    return found


def _under_secret_keys(value: Any, found: list) -> None:
    """Appends to ``found`` the value of every secret key at any depth of ``value``."""
    if isinstance(value, dict):
        if not _plain_keys.issuperset(value):  # (most requests' keys are known plain)
            for key, item in value.items():
                if isinstance(key, str) and is_secret_key(key):
                    found.append(item)
                elif type(item) not in _SCALARS and isinstance(item, (dict, list)):
                    _under_secret_keys(item, found)
            return
        value = value.values()
    elif not isinstance(value, list):
        return
    for item in value:  # (scalars need no call each)
        if type(item) not in _SCALARS and isinstance(item, (dict, list)):
            _under_secret_keys(item, found)


def _patterns(sensitive_values: Iterable[Any]) -> tuple[list[str], set[int | float]]:
    """The texts to look for (each sensitive text, then its other forms) and the numbers
    to replace whole."""
    leaves: list[str] = []
    numbers: set[int | float] = set()
    containers: list[dict | list] = []
    for value in sensitive_values:
        _collect(value, leaves, numbers, containers)
    patterns = _Patterns()
    patterns.add(sorted(leaves, key=len))  # the most secrets within the bound
    for container in containers:  # outermost first: sub-paths are read less often
        if patterns.full:
            break
        patterns.add(_container_texts(container))
    texts = list(patterns.found)
    numbers = {n for n in numbers if len(to_text(n)) >= MIN_CHARS}
    numbers.update(n for n in map(_as_number, texts) if n is not None)
    patterns.add(map(str.lower, texts))  # host names
    texts = [text for text in texts if not _PLAIN.fullmatch(text)]
    for form in _FORMS:  # each the same as the text for most secrets
        patterns.add(map(form, texts))
    return list(patterns.found), numbers


class _Patterns:
    """The texts to look for, in the order given, until ``MAX_PATTERN_CHARS``: a hostile
    request cannot make building the automaton cost more than that."""

    def __init__(self):
        self.found: dict[str, None] = {}
        self.left = MAX_PATTERN_CHARS

    @property
    def full(self) -> bool:
        return self.left <= 0

    def add(self, texts: Iterable[str | None]) -> None:
        """Adds ``texts`` (computed only while there is room) until one does not fit."""
        for text in texts:
            if self.full:
                return
            if text and len(text) >= MIN_CHARS and text not in self.found:
                if len(text) > self.left:
                    self.left = 0
                    return
                self.found[text] = None
                self.left -= len(text)


def _collect(value: Any, leaves: list[str], numbers: set, containers: list) -> None:
    """What a sensitive value contributes: its string and number leaves (numbers by their
    texts too), and each object or array in it (for its compact JSON)."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        leaves.append(value)
        leaves += _CREDENTIALS.findall(value)  # "Bearer abc…": the credential alone too
    elif isinstance(value, (int, float)):
        numbers.add(value)
        leaves += (to_text(value), str(value))
    elif isinstance(value, (dict, list)):
        containers.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            _collect(item, leaves, numbers, containers)


def _container_texts(value: dict | list) -> Iterator[str]:
    """An object or array as Python's json, JavaScript and Python's repr write it (the
    cheapest first: the next is only written while there is room for it)."""
    yield json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    yield stringify(value)
    yield json.dumps(value, separators=(",", ":"))
    yield repr(value)


def _as_number(text: str) -> int | float | None:
    """The JSON number written ``text`` (as a number prints it), else None."""
    if len(text) > 400 or not _JSON_NUMBER.fullmatch(text):  # int() refuses 4,300 digits
        return None
    number = float(text) if any(c in text for c in ".eE") else int(text)
    return number if text in (to_text(number), str(number)) else None


def _json_escaped(text: str, ascii_only: bool = False) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


def _quoted(safe: str, plus: bool = False) -> Callable[[str], str | None]:
    def form(text: str) -> str | None:
        try:
            return quote_plus(text, safe=safe) if plus else quote(text, safe=safe)
        except UnicodeEncodeError:  # a lone surrogate: no URL can hold it
            return None
    return form


def _idna(text: str) -> str | None:
    if text.isascii() or len(text) > 253 or not _HOST.fullmatch(text):
        return None
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:  # not a host name IDNA can write
        return None


# The forms a text takes where it is written, most likely first (the automaton takes
# them in this order while MAX_PATTERN_CHARS allows).
_FORMS: tuple[Callable[[str], str | None], ...] = (
    _json_escaped,
    functools.partial(_json_escaped, ascii_only=True),
    lambda text: repr(text)[1:-1],
    _quoted(""), _quoted("", plus=True), *map(_quoted, _URL_SAFE),
    lambda text: _json_escaped(_json_escaped(text)),  # JSON text inside a JSON string
    lambda text: _json_escaped(_json_escaped(text, True), True),
    _idna,
)
