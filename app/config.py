"""Every setting in one place: defaults, read from the environment once.

Each setting ``NAME`` can be set as the environment variable ``RUNNER_NAME``.
A value that does not parse stops the start-up with a message naming it; a
``RUNNER_`` variable that names no setting (a typo) is reported with the nearest
setting's name (``unknown_variables``) by the server and the commands at start-up.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

MIB = 1024 * 1024


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be between {low} and {high}" if high else f"must be ≥ {low}")
        return value
    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.upper() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text.upper()
    return parse


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                   r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")


def _allow_list(text: str) -> list[str]:
    """Host names or IP networks; anything else (``10.0.0.0/33``) is refused."""
    entries = _list(text)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if "/" in entry or ":" in entry or not _HOST.match(entry):
                raise ValueError(f"{entry!r} is neither a host name nor an IP network") from None
    return entries


_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _origins(text: str) -> list[str]:
    """Origins as a browser sends them (``https://app.example.com``, ``http://[::1]:8080``):
    lower case, a trailing slash and a default port dropped; anything else is refused."""
    origins = []
    for entry in _list(text):
        found = _ORIGIN.match(entry.lower().removesuffix("/"))
        if found is None:
            raise ValueError(f"{entry!r} is not an origin: scheme://host[:port], no path "
                             "(each origin is listed; * is not accepted)")
        scheme, host, port = found.groups()
        origins.append(f"{scheme}://{host}" + (
            f":{port}" if port and port != _DEFAULT_PORTS[scheme] else ""))
    return origins


SQLITE_PREFIX = "sqlite:///"  # then the file's path: relative, or absolute with a 4th slash
POSTGRES_SCHEMES = ("postgresql", "postgres")


def parse_database_url(text: str) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", url)``; ``ValueError`` for anything else."""
    if text.startswith(SQLITE_PREFIX):
        path = text[len(SQLITE_PREFIX):]
        if not path or "?" in path:
            raise ValueError("a sqlite URL is sqlite:/// and the file's path")
        return "sqlite", path
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as error:
        raise ValueError(f"not a URL ({error})") from None
    if parts.scheme not in POSTGRES_SCHEMES or not (parts.netloc or parts.query):
        raise ValueError("expected sqlite:///<path> or postgresql://[user@]host[:port]/<db>")
    return "postgresql", text


def _database_url(text: str) -> str:
    parse_database_url(text)
    return text


# name: (default, parser of the environment's text)
SETTINGS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    # The store: RUNNER_DATABASE_URL when given (sqlite:///<path> or postgresql://…),
    # else the SQLite file at STORE_PATH (see database_url).
    "DATABASE_URL": ("", _database_url),
    "STORE_PATH": ("var/runner.sqlite3", str),
    "STORE_BUSY_MS": (5000, _int(1, 120_000)),  # how long to wait for a locked store
    # This host's name in the runs it starts (PostgreSQL store): "" is the machine's host
    # name. Hosts that share a host name but not their process ids (containers on the
    # host's network) need distinct ones: a run's pid is only judged by its own host.
    "HOST_ID": ("", str),
    "LOG_FILE": ("var/log/app.log", str),  # "" logs to stdout only
    "LOG_LEVEL": ("INFO", str.upper),
    # SQLite's durability (SPEC §13): NORMAL keeps every answered run through a crash of
    # the service, FULL through a power loss too (a sync of the disk at every commit).
    "SQLITE_SYNCHRONOUS": ("NORMAL", _one_of("NORMAL", "FULL")),
    "LOG_MAX_BYTES": (10 * MIB, _int(0)),
    "LOG_LINE_MAX_BYTES": (64 * 1024, _int(1024)),  # longer lines are cut
    "LOG_BACKUPS": (5, _int(0)),
    "MAX_BODY_BYTES": (1 * MIB, _int(1)),
    "MAX_JSON_DEPTH": (64, _int(1, 512)),
    "MAX_NODES": (20, _int(2, 1000)),
    "MAX_PROBLEMS": (1000, _int(1, 100_000)),  # validation errors listed in one answer
    # SPEC §3's size caps, in characters of JSON: a node's resolved input (condition
    # keys included), a node's result, a run's whole answer (and stored run).
    "MAX_INPUT_CHARS": (4 * MIB, _int(1024)),
    "MAX_RESULT_CHARS": (8 * MIB, _int(1024)),
    "MAX_RUN_CHARS": (32 * MIB, _int(4096)),
    "RUN_DEADLINE_MS": (60_000, _int(1, 3_600_000)),  # gunicorn's timeouts follow (below)
    "RUN_RETENTION_DAYS": (30, _int(1)),
    "MAX_CONCURRENT_RUNS": (max(1, 2 * (os.cpu_count() or 1)), _int(0)),  # per token; workers−1
    # Streams following runs (GET /v1/runs/<id>/stream) per token at once: each holds a
    # worker while it lasts, as a run does (SPEC §12).
    "MAX_FOLLOWERS": (2, _int(1, 1000)),
    # A stream with nothing to send writes a comment line this often (SPEC §12: at
    # most 15 s apart), so a proxy's read timeout (nginx's proxy_read_timeout) never
    # cuts a quiet stream: keep it well below that timeout.
    "STREAM_KEEPALIVE_MS": (15_000, _int(100, 15_000)),
    # A JSON answer of at least this many bytes is gzipped for a client that accepts it
    # (Accept-Encoding: gzip); 0: never. Streams are never compressed. Behind nginx the
    # app is asked for none (deploy/nginx.conf compresses instead).
    "GZIP_MIN_BYTES": (1024, _int(0)),
    # Outbound HTTP may reach these hosts / networks (CIDR) even when internal.
    "OUTBOUND_ALLOW": ([], _allow_list),
    # Pages of these origins may call the API from a browser (CORS); none by default.
    "CORS_ORIGINS": ([], _origins),
    # code-transform: JavaScript heap and whole helper process (OS-enforced) per
    # attempt, and attempts of one worker at once (SPEC §3).
    "CODE_HEAP_MIB": (128, _int(16, 4096)),
    "CODE_PROCESS_MIB": (256, _int(128, 16384)),
    "CODE_MAX_HELPERS": (4, _int(1, 64)),
}


# gunicorn's limits and a run's expiry follow the run deadline (gunicorn.conf.py):
# its `timeout` (the hard limit: the worker is killed) comes well after the deadline,
# so a run always answers by its own deadline first; its `graceful_timeout` lets the
# runs in flight at a restart finish; a run still marked running past its expiry is
# dead, its worker killed by then.
HARD_TIMEOUT_PAST_DEADLINE_S = 30
GRACEFUL_TIMEOUT_PAST_DEADLINE_S = 15
EXPIRY_PAST_HARD_TIMEOUT_S = 30


def run_deadline_s(settings: Mapping[str, Any]) -> float:
    """The run deadline in seconds."""
    return settings["RUN_DEADLINE_MS"] / 1000


def hard_timeout_s(settings: Mapping[str, Any]) -> float:
    """gunicorn's ``timeout``: a request still running then has its worker killed."""
    return run_deadline_s(settings) + HARD_TIMEOUT_PAST_DEADLINE_S


def graceful_timeout_s(settings: Mapping[str, Any]) -> float:
    """gunicorn's ``graceful_timeout``: how long a restart waits for the runs in flight."""
    return run_deadline_s(settings) + GRACEFUL_TIMEOUT_PAST_DEADLINE_S


def run_expiry_s(settings: Mapping[str, Any]) -> float:
    """From a run's start, when a run still marked running is certainly dead."""
    return run_deadline_s(settings) + (HARD_TIMEOUT_PAST_DEADLINE_S
                                       + EXPIRY_PAST_HARD_TIMEOUT_S)


def database_url(settings: Mapping[str, Any]) -> str:
    """The store's URL: ``DATABASE_URL`` when set, else ``sqlite:///`` + ``STORE_PATH``."""
    return settings.get("DATABASE_URL") or SQLITE_PREFIX + settings["STORE_PATH"]


def defaults() -> dict[str, Any]:
    return {name: default for name, (default, _) in SETTINGS.items()}


def default(name: str) -> Any:
    """One setting's default: for code that runs without the app's settings (tests,
    direct calls), so no default is written twice."""
    return SETTINGS[name][0]


class SettingError(ValueError):
    """A setting of the environment that does not parse; the message names it."""


# Settings whose value may hold a password: an error names them without their value.
UNSHOWN = {"DATABASE_URL"}


def from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The settings given in the environment, parsed; ``SettingError`` names a bad one."""
    found = {}
    for name, (_, parse) in SETTINGS.items():
        text = environ.get(f"RUNNER_{name}")
        if text is None:
            continue
        try:
            found[name] = parse(text)
        except ValueError as error:
            shown = "" if name in UNSHOWN else f"={text!r}"
            raise SettingError(f"RUNNER_{name}{shown}: {error}") from None
    return found


# RUNNER_ variables that are not the service's but are no typo either: the tests'
# PostgreSQL, and those GitHub Actions sets in every job (the suite may run there).
OTHER_VARIABLES = ("RUNNER_TEST_DATABASE_URL", "RUNNER_ARCH", "RUNNER_DEBUG",
                   "RUNNER_ENVIRONMENT", "RUNNER_NAME", "RUNNER_OS", "RUNNER_PERFLOG",
                   "RUNNER_TEMP", "RUNNER_TOOL_CACHE", "RUNNER_TRACKING_ID",
                   "RUNNER_WORKSPACE")


def unknown_variables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """One warning per ``RUNNER_`` variable (in any case) that names no setting, with the
    nearest setting's name when one is close: such a variable is ignored."""
    known = [f"RUNNER_{name}" for name in SETTINGS] + list(OTHER_VARIABLES)
    suffixes = {name.removeprefix("RUNNER_"): name for name in known}
    warnings = []
    for variable in sorted(environ):
        if not variable.upper().startswith("RUNNER_") or variable in known:
            continue
        # Compared without the prefix all share, which would make every name look close.
        near = difflib.get_close_matches(variable.upper().removeprefix("RUNNER_"), suffixes,
                                         n=1, cutoff=0.6)
        hint = f"; did you mean {suffixes[near[0]]}?" if near else ""
        warnings.append(f"{variable} is not a setting and is ignored{hint}")
    return warnings


def load(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the environment, then ``overrides`` (tests)."""
    settings = defaults()
    settings.update(from_env())
    settings.update(overrides or {})
    return settings
