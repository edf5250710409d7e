"""Several Redis deployments at once: the fleet's shards, and which one holds a stream.

The fleet's Redis URL (`--redis-url`, `RTAI_REDIS_URL`) may name several deployments separated by
spaces, each a plain `redis://` URL or a `redis+sentinel://` group:

    RTAI_REDIS_URL="redis+sentinel://s1,s2,s3/home redis://shard-b:6379/0 redis://shard-c:6379/0"

- A stream lives on one shard, chosen by rendezvous (highest random weight) hashing of its id over
  the shards' identities (host, port and db, or Sentinel service and db; not the password, not the
  order given). Adding a shard moves only the streams the new shard wins, about 1/N of them; every
  process that reads the same list places every stream the same way.
- Every key named for a stream (its queue, blobs, ledger, history, tracks, previews, ...) is on the
  stream's shard, so every Lua script runs on the one shard that holds its keys.
- A worker serves every shard: its lease, in-flight hash, stats and RQ records are on each.
- The first URL is the home shard. It also holds the control plane (desired state, claims, producer
  daemons, camera-list markers) and the event log that sinks read. Keep it highly available
  (a Sentinel group) when the fleet must survive its loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from . import keys
from .errors import ConfigError, RedisUnavailableError
from .redis_client import connect, parse_sentinel_url
from .sources import redact, redact_text


def split_urls(value: str) -> list[str]:
    """The deployments a Redis URL setting names (one or more, separated by whitespace)."""
    urls = value.split()
    if not urls:
        raise ConfigError("the Redis URL is empty")
    return urls


def identity(url: str) -> str:
    """What names a deployment for placement: host:port/db (or sentinel:SERVICE/db). A password
    or an option changed in the URL moves no stream; two URLs for the same deployment are refused."""
    sentinel = parse_sentinel_url(url)
    if sentinel is not None:
        return f"sentinel:{sentinel.service}/{sentinel.db}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    path = parts.path.strip("/") or "0"
    try:
        port = parts.port or 6379
    except ValueError as exc:  # the same words connect() uses for a URL it cannot parse
        raise RedisUnavailableError(f"bad Redis URL {redact(url)!r}: {redact_text(str(exc))}") from exc
    return f"{(parts.hostname or 'localhost').lower()}:{port}/{path}"


def weight(shard_id: str, stream_id: str) -> int:
    """The stream's rendezvous weight on a shard (64 bits of BLAKE2b: stable across processes and
    Python versions, unlike hash())."""
    digest = hashlib.blake2b(f"{shard_id}\0{stream_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(shard_ids: list[str], stream_id: str) -> int:
    """The index of the shard that holds `stream_id` (highest weight; ties: the lower index)."""
    return max(range(len(shard_ids)), key=lambda i: (weight(shard_ids[i], stream_id), -i))


#: A worker's lanes and the readers of every shard (`rtai status`, the REST API, `rtai up`) give up
#: on one shard's command after this many seconds, without retrying it. A shard that hangs (stopped,
#: or behind a partition: no reply and no refusal) then costs the rest of the fleet seconds, where a
#: client's usual 10 s and three retries held every shard's streams for as long as it hung. A fetch,
#: a settle or a status read takes milliseconds; this only has to outlast a busy Redis's stalls.
GIVE_UP_S = 2.0


@dataclass
class Shards:
    """The fleet's deployments and a client for each, opened when first used."""

    urls: list[str]
    #: With several shards, each client gives up on a command after this long, unretried (GIVE_UP_S);
    #: None: the usual timeout and retries (one Redis always has them: there is nothing else to serve).
    give_up_s: float | None = None
    ids: list[str] = field(init=False)
    _clients: dict[int, redis.Redis] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = [identity(u) for u in self.urls]
        seen: dict[str, int] = {}
        for i, ident in enumerate(self.ids):
            if ident in seen:
                raise ConfigError(
                    f"Redis shards {seen[ident] + 1} and {i + 1} name the same deployment ({ident}): list each once"
                )
            seen[ident] = i

    @classmethod
    def from_url(cls, value: str, *, give_up_s: float | None = None) -> Shards:
        return cls(split_urls(value), give_up_s=give_up_s)

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def sharded(self) -> bool:
        return len(self.urls) > 1

    def index_for(self, stream_id: str) -> int:
        keys.check_stream_id(stream_id)
        return 0 if len(self.urls) == 1 else place(self.ids, stream_id)

    def url_for(self, stream_id: str) -> str:
        return self.urls[self.index_for(stream_id)]

    def client(self, index: int) -> redis.Redis:
        if index not in self._clients:
            if self.sharded and self.give_up_s is not None:
                self._clients[index] = connect(self.urls[index], check=False, socket_timeout=self.give_up_s, retries=0)
            else:
                self._clients[index] = connect(self.urls[index], check=False)
        return self._clients[index]

    def for_stream(self, stream_id: str) -> redis.Redis:
        """The client of the shard that holds the stream's keys."""
        return self.client(self.index_for(stream_id))

    @property
    def home(self) -> redis.Redis:
        """The first shard: the control plane's state and the event log live here."""
        return self.client(0)

    def clients(self) -> Iterator[tuple[int, redis.Redis]]:
        for i in range(len(self.urls)):
            yield i, self.client(i)

    def by_shard(self, stream_ids: list[str]) -> dict[int, list[str]]:
        """The stream ids grouped by the shard that holds them."""
        out: dict[int, list[str]] = {}
        for s in stream_ids:
            out.setdefault(self.index_for(s), []).append(s)
        return out

    def label(self, index: int) -> str:
        """A shard as logs and status name it (no password)."""
        return f"shard {index} ({self.ids[index]})"


#: What the views read the fleet from: one Redis, or every shard.
Fleet = redis.Redis | Shards


def home_of(fleet: Fleet) -> redis.Redis:
    return fleet.home if isinstance(fleet, Shards) else fleet


def client_for(fleet: Fleet, stream_id: str) -> redis.Redis:
    """The client that holds the stream's keys: its shard's, or the one Redis."""
    return fleet.for_stream(stream_id) if isinstance(fleet, Shards) else fleet
