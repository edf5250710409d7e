"""A pub/sub subscription that outlives its server: lost, or gone silent, it subscribes again.

`rtai subscribe` (results and tracked frames) and `rtai events` read through a `Subscription`. When
Redis goes away (a restart, a Sentinel failover) the subscription is opened again once Redis
answers, asking the sentinels for the master where there are sentinels, and the caller hears
`AGAIN` so that it can fill the gap from history. What it already gave is kept in a `Given`.

A Redis that hangs, or a master that a partition cuts off, neither sends nor refuses anything, so
a subscriber on it would wait for ever: redis-py's health check sends a PING but never minds an
unanswered one, and TCP gives up on its own only after many minutes. A subscriber that has heard
nothing for PING_AFTER_S sends a PING; no answer within ANSWER_S more, and the subscription is
lost (SilentSubscriptionError). One PING per PING_AFTER_S of quiet, nothing while messages flow.
The live view's asyncio listener (control/api/livefeed.py) keeps its own loop but the same `Silence`."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import redis
import redis.client

from .backoff import Backoff
from .redis_client import describe

log = logging.getLogger(__name__)

PING_AFTER_S = 3.0
ANSWER_S = 3.0
#: Sequence numbers (or other ids) remembered per stream, so what is replayed after a reconnect is given once.
GIVEN_KEPT = 4096
#: What `Subscription.get` returns once it has subscribed again after losing the subscription.
AGAIN: dict[str, Any] = {"type": "subscribed again"}

T = TypeVar("T")


class SilentSubscriptionError(redis.TimeoutError):
    """Nothing came back on a subscription, not even the answer to a PING."""


class Silence:
    """What a subscription has heard, and when a PING is due (the caller sends it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.pinged: float | None = None

    def heard(self) -> None:
        """Anything arrived: a message, a subscribe confirmation, a PONG."""
        self.last, self.pinged = self.clock(), None

    def ping_due(self) -> bool:
        """Quiet for PING_AFTER_S and no PING out yet: send one now (then call `sent`)."""
        return self.pinged is None and self.clock() - self.last >= PING_AFTER_S

    def sent(self) -> None:
        self.pinged = self.clock()

    def check(self) -> None:
        """SilentSubscriptionError when a PING has gone unanswered for ANSWER_S."""
        if self.pinged is not None and (quiet := self.clock() - self.pinged) >= ANSWER_S:
            raise SilentSubscriptionError(f"no answer to a PING in {quiet:.1f} s (the server hangs or is cut off)")


#: A Given's floor when everything its stream holds came after the subscription began (the stream
#: was empty, or appeared later).
BEGINNING = object()


class Given:
    """What one stream gave out lately (the last GIVEN_KEPT sequence numbers, or other ids), and
    its floor: the newest record its stream held when the subscription began (`BEGINNING` when it
    held none; None while not known)."""

    def __init__(self, floor: Any = None) -> None:
        self._order: deque[Any] = deque()
        self._set: set[Any] = set()
        self.floor = floor

    def __contains__(self, item: object) -> bool:
        return item in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, item: Any) -> None:
        if item in self._set:
            return
        self._order.append(item)
        self._set.add(item)
        if len(self._order) > GIVEN_KEPT:
            self._set.discard(self._order.popleft())

    def missed(self, history: Iterable[T], key: Callable[[T], Any]) -> list[T]:
        """Of `history` (oldest first), what came after the subscription began and was not given;
        `key` gives what this Given holds for an item (a sequence number, or any ordered id). The
        subscription began after the floor, or (floor unknown) before the first thing given; with
        neither known, nothing (the subscriber never asked for what came before it)."""
        if self.floor is BEGINNING:
            return [item for item in history if key(item) not in self._set]
        first = self.floor if self.floor is not None else min(self._set, default=None)
        if first is None:
            return []
        return [item for item in history if key(item) > first and key(item) not in self._set]


class Subscription:
    """One pub/sub subscription, opened by `open_subscription` (which subscribes, and raises while
    Redis does not answer). The first one is opened at once, so a wrong URL is said at once; unless
    `patient` (one shard of several: the others are read meanwhile), when a Redis that does not
    answer yet is tried again as a lost one is."""

    def __init__(
        self,
        open_subscription: Callable[[], redis.client.PubSub],
        *,
        what: str = "subscription",
        patient: bool = False,
        on_first_open: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_subscription
        #: Called once, right after the subscription first opens (the caller reads its floors then).
        self._on_first_open = on_first_open
        self.opened = False
        self.what = what
        self.clock = clock
        self.silence = Silence(clock)
        self.backoff = Backoff(first=0.1, cap=2.0)
        self.retry_at = 0.0
        #: Times the subscription was lost.
        self.losses = 0
        self.pubsub: redis.client.PubSub | None = None
        try:
            self.pubsub = open_subscription()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not patient:
                raise
            self.lost(exc)
        else:
            self._first_opened()

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next message (redis-py's dict) within `timeout`, None, or AGAIN right after the
        subscription was opened again. A lost or silent subscription is closed, and opened again
        after a backoff (0.1 s doubling to 2 s); nothing is raised for it."""
        if self.pubsub is None:
            wait = self.retry_at - self.clock()
            if wait > 0:
                time.sleep(min(wait, timeout))
                if wait > timeout:
                    return None
            try:
                self.pubsub = self._open()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.lost(exc)
                return None
            self.silence = Silence(self.clock)
            self.backoff.reset()
            if not self.opened:  # never open before (patient): nothing was missed
                self._first_opened()
                log.warning("%s: subscribed", self.what)
                return None
            log.warning("%s: subscribed again", self.what)
            return AGAIN
        try:
            message: dict[str, Any] | None = self.pubsub.get_message(timeout=timeout)
            if message is not None:
                self.silence.heard()
                return message
            self.silence.check()
            if self.silence.ping_due():
                self.pubsub.ping()
                self.silence.sent()
            return None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.lost(exc)
            return None

    def _first_opened(self) -> None:
        self.opened = True
        hook, self._on_first_open = self._on_first_open, None
        if hook is None:
            return
        try:
            hook()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("%s: where its streams stood is unknown (%s)", self.what, describe(exc))

    def refill(self, read: Callable[[], list[T]]) -> list[T]:
        """After AGAIN: what `read` returns (the caller's read of what it missed, from history). A read
        that fails loses the subscription again and returns nothing; the next AGAIN reads again."""
        try:
            return read()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.lost(exc)
            return []

    def lost(self, exc: BaseException) -> None:
        """The subscription failed (here, or in the caller's read of history after AGAIN): close it;
        `get` opens it again after the backoff, and says AGAIN then."""
        delay = self.backoff.next()
        self.losses += 1
        log.warning("%s lost (%s); subscribing again in %.1f s", self.what, describe(exc), delay)
        self.close()
        self.retry_at = self.clock() + delay

    def close(self) -> None:
        if self.pubsub is not None:
            pubsub, self.pubsub = self.pubsub, None
            pubsub.close()


def merged(feeds: Mapping[str, Callable[[], Iterator[T]]], *, deadline: float | None) -> Iterator[T]:
    """What several feeds give, as it arrives: each runs on its own thread (named by its key), so a
    shard that hangs holds only its own feed. Ends at the deadline, or once every feed has ended."""
    out: queue.Queue[T] = queue.Queue(maxsize=10_000)
    done = threading.Event()

    def pump(feed: Callable[[], Iterator[T]]) -> None:
        for item in feed():
            while not done.is_set():
                try:
                    out.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if done.is_set():
                return

    threads = [threading.Thread(target=pump, args=(f,), name=name, daemon=True) for name, f in feeds.items()]
    for t in threads:
        t.start()
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                yield out.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and out.empty():
                    return
    finally:
        done.set()
