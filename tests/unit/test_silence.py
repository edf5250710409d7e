"""control/silence.py: when a quiet subscription sends a PING, and when it is given up as lost."""

from __future__ import annotations

import pytest
import redis

from control.silence import ANSWER_S, PING_AFTER_S, Silence, SilentSubscriptionError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_quiet_subscription_pings_once_and_is_lost_when_the_ping_goes_unanswered():
    clock = Clock()
    silence = Silence(clock)
    clock.t += PING_AFTER_S - 0.1
    assert not silence.ping_due()
    clock.t += 0.1
    assert silence.ping_due()
    silence.sent()
    assert not silence.ping_due(), "one PING at a time"
    clock.t += ANSWER_S - 0.1
    silence.check()  # not yet
    clock.t += 0.1
    with pytest.raises(SilentSubscriptionError, match="no answer to a PING") as caught:
        silence.check()
    assert isinstance(caught.value, redis.TimeoutError), "handled where a lost connection is"


def test_anything_heard_clears_a_ping_out_and_restarts_the_quiet():
    clock = Clock()
    silence = Silence(clock)
    clock.t += PING_AFTER_S
    silence.sent()
    clock.t += ANSWER_S - 0.5
    silence.heard()  # the PONG, or a message
    clock.t += 1.0
    silence.check()
    assert not silence.ping_due()
    clock.t += PING_AFTER_S
    assert silence.ping_due()
