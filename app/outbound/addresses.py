"""Which addresses outbound HTTP may reach: classify, allow, resolve once.

Internal means anything ``ipaddress`` does not call global, multicast, and the
IANA special-purpose ranges in ``_BLOCKED`` (listed here because
``ipaddress``'s tables differ between Python versions: 3.11.7 calls
``192.0.0.8`` and ``3fff::1`` global). IPv6 forms that hand traffic to an IPv4
address — IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16`` and NAT64
``64:ff9b::/96`` — are judged by that IPv4 address; IPv4-compatible
``::a.b.c.d`` (deprecated) and Teredo (``2001::/32``) are refused outright.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable

from ..failure import NodeError
from .lookup import getaddrinfo

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_BLOCKED = [ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/8", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
    "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The environment variable (app/config.py's OUTBOUND_ALLOW) that allows internal
# destinations: named in the refusal, so the workflow's author knows what to ask for.
ALLOW_SETTING = "RUNNER_OUTBOUND_ALLOW"


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form delivers to (mapped, 6to4, NAT64), else None."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress | str) -> bool:
    """True only for global unicast addresses, judged after unwrapping IPv4 forms."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    ip = embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in _BLOCKED)


def allowed(host: str, ip: IPAddress, allow_list: Iterable[str]) -> bool:
    """True when the operator allows ``host`` by name (any case) or ``ip`` by network."""
    name = host.rstrip(".").lower()
    candidates = [a for a in (ip, embedded_ipv4(ip)) if a is not None]
    for entry in allow_list:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            if entry.strip().rstrip(".").lower() == name:
                return True
            continue
        if any(a in network for a in candidates):
            return True
    return False


def resolve(host: str, port: int, allow_list: Iterable[str] = (), deadline: float | None = None,
            cancelled: threading.Event | None = None) -> list[IPAddress]:
    """Every address ``host`` resolves to (once); BLOCKED_DESTINATION if any is refused.

    The lookup is waited for until ``deadline`` (``time.monotonic()``) or
    ``cancelled``, then ``TIMEOUT`` (``lookup``: getaddrinfo has no timeout).

    Refusing when *any* address is internal, not only when all are, means a
    name that answers both a public and an internal address cannot be used to
    reach the internal one.
    """
    try:
        infos = getaddrinfo(host, port, deadline, cancelled)
    except (OSError, UnicodeError) as error:
        why = getattr(error, "strerror", None) or str(error)
        raise NodeError("NETWORK_ERROR", f"Could not resolve {host!r}: {why}.", True) from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos
                                   if info[0] in (socket.AF_INET, socket.AF_INET6)))
    allow_list = list(allow_list)
    if not addresses or any(not is_public(ip) and not allowed(host, ip, allow_list)
                            for ip in addresses):
        raise NodeError("BLOCKED_DESTINATION", (
            f"{host!r} is or resolves to an internal address (loopback, private, link-local, "
            "shared, multicast or reserved), which the operator has not allowed: the "
            f"setting {ALLOW_SETTING} lists the hosts and networks that may be reached."),
            False)
    return addresses
