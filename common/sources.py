"""Source URLs: what the REST API lets a request name, and how a URL is shown without its secrets.

`redact(url)` is the one way a source or Redis URL is displayed or logged: the password in the
user-info part and secret-looking query values become `***`. The full URL stays only where a
process must open it (producer settings, desired state in Redis).

`check_scheme` (pure) and `check_api_source` (resolves names, looks at the file system) are the
rules for sources that come from an API request. The CLI (`rtai producer --source`, `rtai stream
add`, cameras.yml) is the operator's own and is not held to them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import DEMO_SOURCE
from .errors import ConfigError, SourceRefusedError

#: protocol (the guide's `stream_config.protocol`) -> URL schemes it may name.
PROTOCOL_SCHEMES = {"rtsp": ("rtsp", "rtsps"), "http": ("http",), "https": ("https",), "rtmp": ("rtmp",)}
FILE_PROTOCOL = "file"
#: Query parameters whose values are secrets (compared lower-case).
SECRET_PARAMS = {
    "password",
    "sentinel_password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "access_token",
    "auth",
    "key",
    "apikey",
    "api_key",
    "secret",
    "signature",
    "sig",
}
#: `RTAI_API_ALLOW_PRIVATE` words: every host; the private (RFC 1918, ULA, CGNAT) ranges only.
ALLOW_ALL_WORDS = {"1", "all", "true", "yes"}
PRIVATE_WORD = "private"
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
MASK = "***"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)(.*)$", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

Resolver = Callable[[str], list[str]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def redact(url: str) -> str:
    """`url` with its password and secret query values replaced by ***; anything else unchanged."""
    m = _SCHEME.match(url)
    if m is None:
        return url
    scheme, authority, rest = m.groups()
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + MASK
    return scheme + userinfo + at + hostport + _redact_query(rest)


def redact_text(text: str) -> str:
    """`text` (a reason, an error message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def _redact_query(rest: str) -> str:
    path, q, query = rest.partition("?")
    if not q:
        return rest
    query, hash_, fragment = query.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and name.lower() in SECRET_PARAMS else part)
    return path + q + "&".join(parts) + hash_ + fragment


def check_scheme(url: str, protocol: str) -> None:
    """Refuse a URL whose scheme is not allowed or does not match `protocol` (no I/O)."""
    if _CONTROL.search(url):
        raise SourceRefusedError("url must not contain spaces or control characters")
    if url == DEMO_SOURCE:
        return
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if protocol == FILE_PROTOCOL:
        if scheme not in ("", "file"):
            raise SourceRefusedError(f"protocol file takes a path or file:// URL, not {scheme}://")
        return
    allowed = PROTOCOL_SCHEMES.get(protocol, ())
    if scheme not in allowed:
        want = " or ".join(f"{s}://" for s in allowed) or "nothing"
        raise SourceRefusedError(f"protocol {protocol} needs a {want} URL (got {scheme + '://' if scheme else 'none'})")


@dataclass(frozen=True)
class SourcePolicy:
    """What an API request may name: files under media_root, hosts with global addresses, and
    the non-global hosts or networks the operator allowed (`RTAI_API_ALLOW_PRIVATE`)."""

    media_root: Path | None = None
    allow_all: bool = False
    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, allow_private: str | None, media_root: Path | str | None) -> SourcePolicy:
        networks: list[Network] = []
        hosts: set[str] = set()
        allow_all = False
        for item in (allow_private or "").split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item in ALLOW_ALL_WORDS:
                allow_all = True
            elif item == PRIVATE_WORD:
                networks.extend(PRIVATE_NETWORKS)
            else:
                try:
                    networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                except ValueError as exc:
                    if "/" in item:
                        raise ConfigError(f"RTAI_API_ALLOW_PRIVATE: {item!r} is not a network: {exc}") from exc
                    hosts.add(item.strip("[]"))
        root = Path(media_root).resolve() if media_root else None
        return cls(media_root=root, allow_all=allow_all, networks=tuple(networks), hosts=frozenset(hosts))

    def address_allowed(self, address: Address) -> bool:
        if self.allow_all:
            return True
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
        if plain.is_global and not plain.is_multicast:
            return True
        return any(plain.version == n.version and plain in n for n in self.networks)


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to (getaddrinfo)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_api_source(url: str, protocol: str, policy: SourcePolicy, *, resolve: Resolver = resolve_host) -> str:
    """The source to store for an API request's `url`, or SourceRefusedError saying why not."""
    check_scheme(url, protocol)
    if url == DEMO_SOURCE:
        return url
    if protocol == FILE_PROTOCOL:
        return str(_media_file(url, policy))
    _check_host(url, policy, resolve)
    return url


def _media_file(url: str, policy: SourcePolicy) -> Path:
    if policy.media_root is None:
        raise SourceRefusedError("local files are refused through the API: the operator set no RTAI_MEDIA_ROOT")
    raw = url.removeprefix("file://")
    path = (policy.media_root / raw).resolve()  # an absolute `raw` replaces the root; symlinks resolved
    if not path.is_relative_to(policy.media_root):
        raise SourceRefusedError("local files must be under the media root (RTAI_MEDIA_ROOT)")
    # One message whether the file is missing, unreadable or not a file: nothing to probe with.
    if not (path.is_file() and os.access(path, os.R_OK)):
        raise SourceRefusedError(f"no readable file {raw!r} in the media root")
    return path


def _check_host(url: str, policy: SourcePolicy, resolve: Resolver) -> None:
    m = _SCHEME.match(url)
    authority = m.group(2) if m else ""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host = hostport[1:].partition("]")[0]
    else:
        host = hostport.rpartition(":")[0] if hostport.count(":") == 1 else hostport
    host = host.lower().rstrip(".")
    if not host:
        raise SourceRefusedError("url has no host")
    if policy.allow_all or host in policy.hosts:
        return
    try:
        addresses = [ipaddress.ip_address(host.partition("%")[0])]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in resolve(host)]
        except (OSError, UnicodeError) as exc:
            raise SourceRefusedError(f"cannot resolve host {host!r}") from exc
    refused = [str(a) for a in addresses if not policy.address_allowed(a)]
    if refused or not addresses:
        raise SourceRefusedError(
            f"host {host!r} is a loopback, link-local, private or reserved address ({', '.join(refused)}): "
            "the operator can allow it with RTAI_API_ALLOW_PRIVATE"
        )
