"""common/clock.RedisClock: a TIME answered late (a Redis that hung, then resumed) is not taken."""

from __future__ import annotations

import time

from common import clock


class _Redis:
    """Answers TIME with Redis' clock `ahead_s` ahead of this host's, after `delay_s`."""

    def __init__(self, ahead_s: float, delay_s: float) -> None:
        self.ahead_s, self.delay_s = ahead_s, delay_s

    def time(self) -> tuple[int, int]:
        now = time.time() + self.ahead_s  # read when the server answers...
        time.sleep(self.delay_s)  # ...and sent back late, as by a Redis that hung after reading TIME
        return int(now), int((now % 1) * 1e6)


def test_a_late_answer_to_time_is_discarded_and_measured_again_soon(monkeypatch):
    monkeypatch.setattr(clock, "MAX_RTT_S", 0.2)
    monkeypatch.setattr(clock, "RETRY_S", 0.3)
    redis_clock = clock.RedisClock(_Redis(ahead_s=2.0, delay_s=0.0), what="test", every_s=60)  # type: ignore[arg-type]
    assert abs(redis_clock.measure() - 2.0) < 0.05
    redis_clock.client = _Redis(ahead_s=2.0, delay_s=0.5)  # type: ignore[assignment]
    # Taken, this answer would give an offset of 2.0 - 0.25 s; the last one stands instead.
    assert abs(redis_clock.measure() - 2.0) < 0.05
    redis_clock.client = _Redis(ahead_s=3.0, delay_s=0.0)  # type: ignore[assignment]
    assert abs(redis_clock.now() - (time.time() + 2.0)) < 0.05  # not due yet
    time.sleep(0.35)
    assert abs(redis_clock.now() - (time.time() + 3.0)) < 0.05  # measured again RETRY_S later, not every_s
