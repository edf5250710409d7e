"""Placement of streams on shards (common/shards.py): rendezvous hashing by stream id."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.shards import Shards, identity, split_urls

A, B, C = "redis://redis-a:6379/0", "redis://redis-b:6379/0", "redis://redis-c:6379/0"
IDS = [f"cam-{i}" for i in range(3000)]


def test_one_url_is_one_shard_and_holds_every_stream():
    shards = Shards.from_url(A)
    assert not shards.sharded and {shards.index_for(s) for s in IDS} == {0}


def test_several_urls_separated_by_spaces_are_several_shards():
    assert split_urls(f" {A}  {B}\n{C} ") == [A, B, C]
    with pytest.raises(ConfigError, match="empty"):
        split_urls("  ")


def test_streams_spread_evenly_over_the_shards():
    shards = Shards([A, B, C])
    counts = [len(v) for _k, v in sorted(shards.by_shard(IDS).items())]
    assert len(counts) == 3 and all(abs(n - 1000) < 120 for n in counts), counts


def test_adding_a_shard_moves_about_a_third_of_the_streams_and_only_to_the_new_one():
    two, three = Shards([A, B]), Shards([A, B, C])
    moved = [s for s in IDS if two.index_for(s) != three.index_for(s)]
    assert 0.28 < len(moved) / len(IDS) < 0.39
    assert all(three.index_for(s) == 2 for s in moved), "a stream moved between two old shards"


def test_placement_ignores_the_order_of_the_urls_and_their_passwords():
    one = Shards([A, B])
    other = Shards(["redis://:secret@redis-b:6379/0", A])
    assert all(one.ids[one.index_for(s)] == other.ids[other.index_for(s)] for s in IDS[:500])


def test_removing_a_shard_moves_only_its_own_streams():
    three, two = Shards([A, B, C]), Shards([A, C])
    for s in IDS[:1000]:
        if three.index_for(s) != 1:  # not on the removed shard B: it stays where it was
            assert two.ids[two.index_for(s)] == three.ids[three.index_for(s)]


def test_the_same_deployment_twice_is_refused():
    with pytest.raises(ConfigError, match="same deployment"):
        Shards([A, "redis://:pw@REDIS-A:6379/0"])


def test_identity_names_host_port_and_db_or_the_sentinel_service():
    assert identity("redis://h/3") == "h:6379/3"
    assert identity("rediss://:pw@h:6380/0?ssl_cert_reqs=required") == "h:6380/0"
    assert identity("redis+sentinel://s1:26379,s2:26379/home/1") == "sentinel:home/1"
    assert identity("unix:///run/redis.sock") == "unix:/run/redis.sock"


def test_a_bad_stream_id_is_refused_before_placement():
    with pytest.raises(ConfigError, match="not valid"):
        Shards([A, B]).index_for("bad id")
