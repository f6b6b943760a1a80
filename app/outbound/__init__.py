"""Outbound HTTP that cannot be steered at internal addresses (SPEC §5, "Outbound HTTP").

- ``urls``: which URLs are accepted (http/https with a host) → ``Target``, and
  which text can be sent at all (no unpaired surrogates);
- ``addresses``: what counts as internal, the operator's allow-list, resolving
  a host once (``lookup``: within the attempt's deadline);
- ``client``: one request whose every hop, redirects included, is resolved,
  checked and connected to by the checked address, within one deadline;
- ``body``: reading the answer within a size limit, gzip bombs included.

Node types use ``parse_url`` and ``request``.
"""
from __future__ import annotations

from .addresses import IPAddress, allowed, embedded_ipv4, is_public, resolve
from .body import Inflater, read_limited
from .client import Response, request
from .urls import Target, check_text, parse_url, unpaired

__all__ = ["IPAddress", "Inflater", "Response", "Target", "allowed", "check_text",
           "embedded_ipv4", "is_public", "parse_url", "read_limited", "request", "resolve",
           "unpaired"]
