"""Which URLs outbound HTTP accepts, and what it sends for them (SPEC §5)."""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ..failure import NodeError

DEFAULT_PORTS = {"http": 80, "https": 443}
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, always unpaired


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lowercase, ASCII (IDNA), no brackets
    port: int
    path: str  # path and query, percent-encoded
    auth: str | None  # Basic credentials from the URL's userinfo

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def parse_url(url: str, code: str = "INVALID_INPUT") -> Target:
    """An http(s) URL with a host, else ``NodeError(code)``."""
    check_text(url, "The url", code)
    problem = NodeError(code, f"Not an http or https URL with a host: {url[:200]!r}.", False)
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
        if host and not host.isascii():
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise problem from None
    if parts.scheme not in DEFAULT_PORTS or not host:
        raise problem
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Target(url.strip(), parts.scheme, host, port or DEFAULT_PORTS[parts.scheme],
                  path, auth)


def unpaired(text: str) -> int | None:
    """The position of the first unpaired surrogate in ``text``, else None."""
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def check_text(text: str, what: str, code: str = "INVALID_INPUT") -> str:
    """``text`` if it can be encoded; else ``NodeError(code)`` naming ``what``.

    JSON's ``"\\ud800"`` is a valid Python string but no encoding can write it,
    so it is refused here with a message that names the field (and does not
    hold the character itself) instead of failing later inside a codec.
    """
    at = unpaired(text)
    if at is not None:
        raise NodeError(code, f"{what} holds an unpaired surrogate (U+{ord(text[at]):04X} "
                        f"at position {at}), which cannot be encoded.", False)
    return text
