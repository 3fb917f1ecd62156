"""Which outbound URLs alerts may be sent to, judged on the addresses a host resolves to.

A destination URL is user input that makes llmtel send requests from inside its network,
so: `https` only, unless the URL starts with one of the operator's allowed prefixes
(`LLMTEL_ALERT_ALLOWED_URLS`, e.g. `http://127.0.0.1` in tests); no credentials in the URL;
and no request to a link-local (169.254.0.0/16, fe80::/10), metadata, unspecified or
multicast address, whatever name points there. The check resolves the host and judges
every address; the sender then connects to the address that was checked (see
`ResolvedUrl.pinned`), so DNS cannot hand out a different address between check and use.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from schema.alerts import InvalidAlertConfig

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# cloud metadata endpoints that are not link-local
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class UnsafeUrl(InvalidAlertConfig):
    """A destination URL that alerts must not be sent to; the message says why."""


class UnresolvedHost(UnsafeUrl):
    """The URL's host does not resolve (now)."""


@dataclass(frozen=True, slots=True)
class ResolvedUrl:
    url: str
    host: str
    address: str  # the checked address to connect to

    @property
    def pinned(self) -> str:
        """The URL with its host replaced by the checked address (send Host/SNI = host)."""
        parts = urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def forbidden_reason(address: IpAddress) -> str | None:
    """Why alerts may not go to `address`, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_reason(address.ipv4_mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if any(address in network for network in LINK_LOCAL) or address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    return None


def check_scheme(url: str, allowed_prefixes: Sequence[str]) -> None:
    """Syntax and scheme only (no DNS): https, or a prefix the operator allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl("the URL must be https://host/... ")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not contain credentials; webhooks sign with the secret")
    if port == 0:
        raise UnsafeUrl("the URL's port must not be 0")
    if parts.scheme != "https" and not any(_has_prefix(url, p) for p in allowed_prefixes if p):
        raise UnsafeUrl(
            "the URL must use https (plain http is allowed only for prefixes in "
            "LLMTEL_ALERT_ALLOWED_URLS)"
        )


def _has_prefix(url: str, prefix: str) -> bool:
    """`url` starts with `prefix` at a boundary: http://127.0.0.1 does not admit
    http://127.0.0.1.example.com."""
    if not url.startswith(prefix):
        return False
    return prefix.endswith("/") or len(url) == len(prefix) or url[len(prefix)] in "/:?#"


def resolve_url(
    url: str, allowed_prefixes: Sequence[str], resolver: Resolver = system_resolver
) -> ResolvedUrl:
    """Check `url` and the addresses its host resolves to; the first one to connect to."""
    check_scheme(url, allowed_prefixes)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnresolvedHost(f"the host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise UnresolvedHost(f"the host {host!r} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = forbidden_reason(address)
        if reason is not None:
            raise UnsafeUrl(f"the host {host!r} resolves to {address}, {reason}")
    return ResolvedUrl(url, host, addresses[0].split("%", 1)[0])


def check_url(
    url: str, allowed_prefixes: Sequence[str], resolver: Resolver = system_resolver
) -> None:
    """The check when a destination is created: like `resolve_url`, except that a host
    that does not resolve now is accepted (DNS may be down; every send checks again)."""
    try:
        resolve_url(url, allowed_prefixes, resolver)
    except UnresolvedHost:
        return


def parse_prefixes(text: str) -> tuple[str, ...]:
    """`LLMTEL_ALERT_ALLOWED_URLS`: comma-separated URL prefixes."""
    return tuple(p.strip() for p in text.split(",") if p.strip())
