"""Exponential backoff for every retry loop: reopening a source, dequeuing, waiting for Redis.

One object per loop: `next()` gives the delay to wait after a failure (first, first*factor, ...,
never over cap), `reset()` after a success starts again from `first`. `delay(n)` is the delay after
the n-th consecutive failure, for loops that count failures themselves. With `jitter` (0..1) each
delay is shortened by up to that fraction at random, so processes that lost Redis together do not
all retry in the same millisecond; it never lengthens a delay past the cap.
"""

from __future__ import annotations

import math
import random

from .errors import ConfigError


class Backoff:
    def __init__(
        self, *, first: float, cap: float, factor: float = 2.0, jitter: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < first <= cap:
            raise ConfigError(f"backoff: need 0 < first ({first}) <= cap ({cap})")
        if factor < 1:
            raise ConfigError(f"backoff: factor {factor} is below 1")
        if not 0 <= jitter <= 1:
            raise ConfigError(f"backoff: jitter {jitter} is outside 0..1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        #: Consecutive failures since the last reset.
        self.failures = 0

    def delay(self, failures: int) -> float:
        """The delay after the `failures`-th consecutive failure (1 for the first), without jitter."""
        if failures < 1:
            return 0.0
        n = failures - 1
        # At the cap once factor**n reaches cap/first: a long outage cannot overflow the float.
        if self.factor > 1 and n >= math.log(self.cap / self.first, self.factor):
            return self.cap
        return min(self.cap, self.first * self.factor**n)

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        delay = self.delay(self.failures)
        if self.jitter:
            delay *= 1.0 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure waits `first` again."""
        self.failures = 0
