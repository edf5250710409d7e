"""`redis+sentinel://` URLs (common/redis_client.py): what each part means, and a clear error for a
URL that is not one, never showing its password."""

from __future__ import annotations

import pytest

from common.errors import RedisUnavailableError
from common.redis_client import SentinelUrl, parse_sentinel_url


def test_a_sentinel_url_names_the_sentinels_the_service_the_db_and_the_passwords():
    url = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel3/mymaster/2?sentinel_password=sp"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel3", 26379)),
        service="mymaster",
        db=2,
        password="s3cret",
        sentinel_password="sp",
    )
    tls = parse_sentinel_url("rediss+sentinel://app:pw@s1:26379/cache")
    assert tls is not None and (tls.ssl, tls.username, tls.password, tls.db) == (True, "app", "pw", 0)


def test_tls_options_reach_the_masters_connections_and_unknown_options_are_refused():
    url = "rediss+sentinel://:pw@s1:26379/rtai/0?ssl_ca_certs=/etc/rtai/ca.pem&ssl_check_hostname=false"
    got = parse_sentinel_url(url)
    assert got is not None
    assert got.master_kwargs() == {
        "db": 0,
        "username": None,
        "password": "pw",
        "ssl": True,
        "ssl_ca_certs": "/etc/rtai/ca.pem",
        "ssl_check_hostname": False,
    }
    with pytest.raises(RedisUnavailableError, match="ssl_ca_certs needs rediss"):
        parse_sentinel_url("redis+sentinel://s1/rtai/0?ssl_ca_certs=/etc/rtai/ca.pem")
    with pytest.raises(RedisUnavailableError, match="unknown option 'ssl_ca_cert'"):
        parse_sentinel_url("rediss+sentinel://s1/rtai/0?ssl_ca_cert=/etc/rtai/ca.pem")  # a typo, not dropped


def test_ipv6_sentinels_are_bracketed_with_or_without_a_port():
    url = "redis+sentinel://[::1]:26380,[fd00::2],10.0.0.3:26381/rtai/0"
    got = parse_sentinel_url(url)
    assert got is not None and got.sentinels == (("::1", 26380), ("fd00::2", 26379), ("10.0.0.3", 26381))
    with pytest.raises(RedisUnavailableError, match="is not host:port"):
        parse_sentinel_url("redis+sentinel://[::1:26380/rtai/0")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/0", "unix:///tmp/redis.sock"])
def test_other_urls_are_not_sentinel_urls(url):
    assert parse_sentinel_url(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:pw@s1:26379", "no service name"),
        ("redis+sentinel://:pw@s1:26379/m/x", "db 'x' is not a number"),
        ("redis+sentinel://:pw@s1:99999/m", "is not host:port"),
        ("redis+sentinel://:pw@s1:26379,/m", "is not host:port"),
        ("redis+sentinel://:pw@s1/m/0/1", "too many path parts"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong_without_the_password(url, why):
    with pytest.raises(RedisUnavailableError, match=why) as err:
        parse_sentinel_url(url)
    assert "pw" not in str(err.value).replace("password", "")


def test_the_sentinel_that_answered_is_asked_first_and_none_is_ever_lost():
    from types import SimpleNamespace  # noqa: PLC0415

    from common.redis_client import _ask_first  # noqa: PLC0415

    s0, s1, s2 = object(), object(), object()
    manager = SimpleNamespace(sentinels=[s0, s1, s2])
    _ask_first(manager, s2)
    assert manager.sentinels == [s2, s0, s1]
    # A copy taken while another thread swaps in place holds one twice and lacks another: left alone.
    mid_swap = [s1, s1, s2]
    manager.sentinels = mid_swap
    _ask_first(manager, s2)
    assert manager.sentinels is mid_swap and mid_swap == [s1, s1, s2]
