import random

import pytest

from common.backoff import Backoff
from common.errors import ConfigError


def test_delays_double_up_to_the_cap_and_reset_starts_again():
    b = Backoff(first=0.1, cap=1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.failures == 6
    b.reset()
    assert b.next() == 0.1


def test_delay_for_a_failure_count_matches_the_sources_old_formula():
    b = Backoff(first=0.5, cap=30.0)
    for failures in range(1, 40):
        assert b.delay(failures) == pytest.approx(min(30.0, 0.5 * 2 ** (failures - 1)))
    assert b.delay(0) == 0.0
    assert b.delay(10**9) == 30.0  # a week-long outage neither overflows nor loops


def test_jitter_only_shortens_and_stays_within_its_fraction():
    b = Backoff(first=1.0, cap=4.0, jitter=0.5, rng=random.Random(7))
    delays = [b.next() for _ in range(200)]
    plain = [Backoff(first=1.0, cap=4.0).delay(n) for n in range(1, 201)]
    assert all(p * 0.5 <= d <= p for d, p in zip(delays, plain, strict=True))
    assert len({round(d, 6) for d in delays[5:]}) > 100, "jittered delays differ"


def test_a_constant_backoff_is_allowed():
    b = Backoff(first=0.05, cap=0.05)
    assert [b.next() for _ in range(3)] == [0.05, 0.05, 0.05]
    assert Backoff(first=0.2, cap=1.0, factor=1.0).delay(50) == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first": 0, "cap": 1}, "0 < first"),
        ({"first": 2, "cap": 1}, "first (2) <= cap (1)"),
        ({"first": 1, "cap": 2, "factor": 0.5}, "factor 0.5 is below 1"),
        ({"first": 1, "cap": 2, "jitter": 1.5}, "jitter 1.5 is outside"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Backoff(**kwargs)
