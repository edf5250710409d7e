"""Read results: live from pub/sub, and recent ones replayed from each stream's history."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from operator import attrgetter

import redis

from common import keys
from common.errors import SchemaError
from common.redis_client import describe, subscribing
from common.replies import texts
from common.shards import Fleet, Shards, home_of
from common.subscription import AGAIN, ANSWER_S, BEGINNING, Given, Subscription, merged
from common.wire import Result, TrackedFrame, decode_names, decode_result

log = logging.getLogger(__name__)

_SEQ = attrgetter("seq")

#: How far back in a stream's history a reconnecting subscriber looks for what it missed.
RECONNECT_REPLAY = 1000


class Subscriber:
    def __init__(self, client: redis.Redis, streams: list[str], *, where: str = "", patient: bool = False) -> None:
        """`where` names the Redis in logs (a shard); `patient`: one of several shards, which may
        not answer at first (its replay is skipped, its subscription tried again meanwhile)."""
        self.client = client
        self.streams = [keys.check_stream_id(s) for s in streams]
        self.bad_messages = 0
        self.where = f" of {where}" if where else ""
        self.patient = patient
        #: The subscription's own client (common/redis_client.subscribing), made at its first open.
        self._listen: redis.Redis | None = None

    def class_names(self, model: str) -> list[str]:
        """The class names stored for `model` ([] for none); SchemaError for a key that holds no names."""
        raw = self.client.get(keys.model_names(model))
        return decode_names(raw) if raw else []

    def replay(self, stream: str, count: int) -> list[Result]:
        """Up to `count` most recent results of `stream`, oldest first."""
        entries = self.client.xrevrange(keys.history(stream), count=count) or []
        out = []
        for _id, fields in reversed(entries):
            try:
                out.append(decode_result((fields or {})[b"r"]))
            except (SchemaError, KeyError):
                self.bad_messages += 1
        return out

    def _replayed(self, count: int) -> list[Result]:
        """The last `count` results of each stream; with `patient`, none from a Redis that does not answer."""
        try:
            streams = self.streams or texts(self.client.smembers(keys.STREAMS))
            return [result for stream in streams for result in self.replay(stream, count)]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self.patient:
                raise
            log.warning("no replay%s: %s", self.where, describe(exc))
            return []

    def _subscribed(self) -> redis.client.PubSub:
        if self._listen is None:
            self._listen = subscribing(self.client, ANSWER_S)
        pubsub = self._listen.pubsub(ignore_subscribe_messages=True)
        if self.streams:
            pubsub.subscribe(*[keys.results_channel(s) for s in self.streams])
        else:
            pubsub.psubscribe(keys.results_pattern())
        return pubsub

    def _streams(self) -> list[str]:
        """The streams subscribed to: those named, or (all streams) every one this Redis lists."""
        return self.streams or texts(self.client.smembers(keys.STREAMS))

    def _floors(self, given: dict[str, Given]) -> None:
        """Where each stream's history stood when the subscription began (its newest seq), so that
        what a reconnect missed is filled even for a stream that had given nothing yet."""
        streams = self._streams()
        with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(keys.history(stream), count=1)
            newest = pipe.execute()
        for stream, entries in zip(streams, newest, strict=True):
            seen = given.setdefault(stream, Given())
            if not entries:
                seen.floor = BEGINNING
                continue
            with contextlib.suppress(SchemaError, KeyError):
                seen.floor = decode_result((entries[0][1] or {})[b"r"]).seq

    def _missed(self, given: dict[str, Given]) -> list[Result]:
        """After a reconnect: what each stream published meanwhile, from its history (seq order).
        All of it is read before any is marked given, so a read that fails leaves nothing half-given.
        Subscribed to all streams, one this Redis lists that was not there when the subscription
        began is read from its beginning."""
        if not self.streams:
            for stream in self._streams():
                given.setdefault(stream, Given(BEGINNING))
        return [
            r for stream, seen in list(given.items()) for r in seen.missed(self.replay(stream, RECONNECT_REPLAY), _SEQ)
        ]

    def results(self, *, replay: int = 0, deadline: float | None = None) -> Iterator[Result]:
        """Results as they are published: first the last `replay` of each stream from history.

        When Redis goes away (a restart, a Sentinel failover) or goes silent, the subscription is
        opened again once it answers (common/subscription.py), and what each stream published
        meanwhile is read from its history first, so a reconnect leaves no gap it can fill and
        repeats nothing already given."""
        given: dict[str, Given] = {}
        sub = Subscription(
            self._subscribed,
            what=f"the results subscription{self.where}",
            patient=self.patient,
            on_first_open=partial(self._floors, given),
        )
        try:
            for result in self._replayed(replay) if replay else []:
                given.setdefault(result.stream, Given()).add(result.seq)
                yield result
            while deadline is None or time.monotonic() < deadline:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                message = sub.get(wait)
                if message is AGAIN:  # subscribed again: first what was published meanwhile
                    for result in sub.refill(lambda: self._missed(given)):
                        given.setdefault(result.stream, Given()).add(result.seq)
                        yield result
                    continue
                if message is None or message["type"] not in ("message", "pmessage"):
                    continue
                try:
                    result = decode_result(message["data"])
                except SchemaError:
                    self.bad_messages += 1
                    continue
                seen = given.setdefault(result.stream, Given())
                if result.seq in seen:
                    continue  # already given: replayed from history
                seen.add(result.seq)
                yield result
        finally:
            sub.close()

    @staticmethod
    def describe(result: Result, names: list[str]) -> str:
        parts = []
        for x1, y1, x2, y2, conf, cls in result.boxes:
            label = names[int(cls)] if 0 <= cls < len(names) else str(cls)
            parts.append(f"{label} {conf:.2f} [{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]")
        return f"{result.stream} #{result.seq} {result.latency_ms:.0f} ms {result.worker}: " + (", ".join(parts) or "-")


class ClassNames:
    """Class names by model for printing results, read once per model (tried again, at most once a
    second, while none are stored yet); a Redis that does not answer gives none (boxes print the
    class number) rather than an error."""

    def __init__(self, read: Callable[[str], list[str]]) -> None:
        self._read = read
        self._names: dict[str, list[str]] = {}
        self._tried: dict[str, float] = {}

    def __call__(self, model: str) -> list[str]:
        names = self._names.get(model)
        if names or time.monotonic() - self._tried.get(model, -1e9) < 1.0:
            return names or []
        self._tried[model] = time.monotonic()
        try:
            self._names[model] = self._read(model)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.info("class names of %s unreadable: %s", model, describe(exc))
        except SchemaError as exc:
            log.warning("class names of %s unreadable (printed as numbers): %s", model, exc)
        return self._names.get(model) or []


class ShardedSubscriber:
    """Results of a sharded fleet (common/shards.py) as one feed: a Subscriber on each shard that
    holds one of the streams (every shard, for all streams), each on its own thread."""

    def __init__(self, shards: Shards, streams: list[str]) -> None:
        groups = shards.by_shard(streams) if streams else {i: [] for i in range(len(shards))}
        self.parts = {
            i: Subscriber(shards.client(i), ss, where=shards.label(i), patient=True) for i, ss in sorted(groups.items())
        }

    @property
    def bad_messages(self) -> int:
        return sum(p.bad_messages for p in self.parts.values())

    def class_names(self, model: str) -> list[str]:
        for part in self.parts.values():
            try:
                names = part.class_names(model)
            except (redis.ConnectionError, redis.TimeoutError, SchemaError):
                continue  # a shard down, or its key unreadable: another one has the names
            if names:
                return names
        return []

    def results(self, *, replay: int = 0, deadline: float | None = None) -> Iterator[Result]:
        feeds = {
            f"rtai-subscribe:{i}": partial(p.results, replay=replay, deadline=deadline) for i, p in self.parts.items()
        }
        return merged(feeds, deadline=deadline)


def subscriber(fleet: Fleet, streams: list[str]) -> Subscriber | ShardedSubscriber:
    """A subscriber to one Redis, or to every shard of a sharded fleet."""
    if isinstance(fleet, Shards) and fleet.sharded:
        return ShardedSubscriber(fleet, streams)
    return Subscriber(home_of(fleet), streams)


def describe_tracked(frame: TrackedFrame, names: list[str]) -> str:
    """A tracked frame as one line, like a result's: `door #12: #3 circle 0.91 [x1,y1,x2,y2] in entrance, ...`."""
    parts = []
    for b in frame.boxes:
        label = names[b.cls] if 0 <= b.cls < len(names) else str(b.cls)
        where = f" in {'+'.join(b.zones)}" if b.zones else ""
        parts.append(f"#{b.track} {label} {b.conf:.2f} [{b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}]{where}")
    return f"{frame.stream} #{frame.seq}: " + (", ".join(parts) or "-")
