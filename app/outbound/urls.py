"""Which URLs outbound HTTP accepts, and what it sends for them (SPEC §5)."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ..nodes.base import NodeError

DEFAULT_PORTS = {"http": 80, "https": 443}


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


