"""`rtai tracker`, `rtai events`, `rtai sink mqtt|webhook` (loaded by control/cli.py on first use)."""

from __future__ import annotations

import difflib
import json
import time

import click
import redis

from common import desired, keys
from common.config import redis_url
from common.exitcodes import EXIT_CONFIG
from common.proctitle import set_title
from common.redis_client import check_at_start
from common.replies import text
from common.shards import GIVE_UP_S, Shards, home_of
from common.stopping import run_loops, stop_on_signals


@click.command()
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--name", default=None, help="Name of this tracking process (default host:tracker:pid).")
def tracker(redis_url: str | None, name: str | None) -> None:
    """Track every stream declared with tracking on that no other tracker holds; emit its events."""
    from common.sources import redact  # noqa: PLC0415

    from .stage import stages, tracked_streams  # noqa: PLC0415

    url = _url(redis_url)
    parts = stages(url, name=name)
    set_title(f"rtai-tracker:{parts[0].name}")
    wanted = sorted(tracked_streams(parts[0].home))
    where = f"{len(parts)} Redis shards" if len(parts) > 1 else "Redis"
    click.echo(
        f"rtai tracker {parts[0].name}: tracking the streams declared with tracking on that no other tracker holds "
        f"(declared now: {', '.join(wanted) or 'none'}); {where} {redact(url)}"
    )
    stop_on_signals(parts)
    run_loops(parts, "tracker")


@click.command()
@click.argument("stream")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--replay", type=int, default=0, help="First print up to N recent events from the event log.")
@click.option("--count", type=int, default=None, help="Exit after N events.")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds.")
@click.option("--wait", is_flag=True, help="Wait for STREAM's events even if no such stream is declared yet.")
def events(
    stream: str, redis_url: str | None, replay: int, count: int | None, timeout: float | None, wait: bool
) -> None:
    """Print STREAM's events (entered/left zone, crossed line, dwell, appeared/lost) as JSON lines."""
    from .feed import live_events  # noqa: PLC0415

    url = _url(redis_url)
    shards = Shards.from_url(url, give_up_s=GIVE_UP_S)  # with shards: a hung one is given up on within seconds
    for i in sorted({0, shards.index_for(keys.check_stream_id(stream))}):
        check_at_start(shards.urls[i])  # the home shard and the stream's: a wrong URL is said now
    if not wait:
        check_known(shards, keys.check_stream_id(stream))
    client = shards.for_stream(keys.check_stream_id(stream))  # its events are on its shard
    deadline = None if timeout is None else time.monotonic() + timeout
    if count is not None and count <= 0:
        return
    for seen, event in enumerate(live_events(client, stream, replay=replay, deadline=deadline), 1):
        click.echo(json.dumps(event))
        if count is not None and seen >= count:
            break


def known_streams(client: redis.Redis | Shards) -> tuple[set[str], list[str]]:
    """Streams declared (desired state) or known to the fleet (ever run, on any shard), and the
    shards that did not answer (their streams are not listed; callers pass shards that give up
    after GIVE_UP_S)."""
    known = set(desired.streams(home_of(client)))
    if not isinstance(client, Shards) or not client.sharded:
        return known | {text(s) for s in home_of(client).smembers(keys.STREAMS)}, []
    unreachable = []
    for i, shard in client.clients():
        try:
            known |= {text(s) for s in shard.smembers(keys.STREAMS)}
        except (redis.ConnectionError, redis.TimeoutError):
            unreachable.append(client.label(i))
    return known, unreachable


def check_known(client: redis.Redis | Shards, stream: str, *, command: str = "events") -> None:
    """A stream nobody declared or ran: say so (with the close match) instead of waiting silently."""
    known, unreachable = known_streams(client)
    if stream in known:
        return
    close = difflib.get_close_matches(stream, sorted(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else f" Known streams: {', '.join(sorted(known)) or 'none'}."
    if unreachable:
        hint += f" ({', '.join(unreachable)} did not answer: streams known only there are not listed.)"
    click.echo(
        f"rtai {command}: no stream {stream!r} is declared or known.{hint} (--wait waits for it anyway.)", err=True
    )
    raise SystemExit(EXIT_CONFIG)


def _url(override: str | None) -> str:
    return redis_url(override)
