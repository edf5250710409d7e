"""A subscription whose server has gone silent.

A Redis that hangs, or a master that a partition cuts off, neither sends nor refuses anything, so
a subscriber on it would wait for ever: redis-py's health check sends a PING but never minds an
unanswered one, and TCP gives up on its own only after many minutes. A subscriber that has heard
nothing for PING_AFTER_S sends a PING; no answer within ANSWER_S more, and the subscription is
lost (SilentSubscriptionError), so it subscribes again, asking the sentinels for the master where
there are sentinels. One PING per PING_AFTER_S of quiet, nothing while messages flow."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

PING_AFTER_S = 3.0
ANSWER_S = 3.0


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
