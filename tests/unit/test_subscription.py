"""common/subscription.py: when a quiet subscription sends a PING, and when it is given up as lost."""

from __future__ import annotations

import pytest
import redis

from common.subscription import ANSWER_S, GIVEN_KEPT, PING_AFTER_S, Given, Silence, SilentSubscriptionError


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


def test_given_fills_the_gap_after_what_it_gave_first_and_repeats_nothing():
    given = Given()
    for seq in (5, 6, 9):
        given.add(seq)
    history = [3, 4, 5, 6, 7, 8, 9, 10]  # 3, 4: before this subscriber began; 5, 6, 9: given already
    assert given.missed(history, lambda s: s) == [7, 8, 10]
    assert Given().missed(history, lambda s: s) == []  # nothing given yet: nothing asked for before it


def test_given_forgets_the_oldest_past_its_cap():
    given = Given()
    for seq in range(GIVEN_KEPT + 10):
        given.add(seq)
    assert len(given) == GIVEN_KEPT and 9 not in given and 10 in given and GIVEN_KEPT + 9 in given
