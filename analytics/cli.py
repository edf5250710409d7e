"""`rtai tracker`, `rtai events`, `rtai sink mqtt|webhook` (loaded by control/cli.py on first use)."""

from __future__ import annotations

import json
import signal
import time

import click

from common import keys
from common.config import redis_url
from common.proctitle import set_title
from common.redis_client import connect


@click.command()
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--name", default=None, help="Name of this tracking process (default host:tracker:pid).")
def tracker(redis_url: str | None, name: str | None) -> None:
    """Track every stream declared with tracking on that no other tracker holds; emit its events."""
    from .stage import TrackingStage  # noqa: PLC0415

    stage = TrackingStage(_url(redis_url), name=name)
    set_title(f"rtai-tracker:{stage.name}")
    signal.signal(signal.SIGTERM, lambda *_: stage.stop())
    signal.signal(signal.SIGINT, lambda *_: stage.stop())
    stage.run()


@click.command()
@click.argument("stream")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--replay", type=int, default=0, help="First print up to N recent events from the event log.")
@click.option("--count", type=int, default=None, help="Exit after N events.")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds.")
def events(stream: str, redis_url: str | None, replay: int, count: int | None, timeout: float | None) -> None:
    """Print STREAM's events (entered/left zone, crossed line, dwell, appeared/lost) as JSON lines."""
    from .feed import recent_events  # noqa: PLC0415

    client = connect(_url(redis_url))
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.events_channel(keys.check_stream_id(stream)))
    seen = 0
    for event in reversed(recent_events(client, stream=stream, limit=replay)) if replay else []:
        click.echo(json.dumps(event))
        seen += 1
    deadline = None if timeout is None else time.monotonic() + timeout
    while (count is None or seen < count) and (deadline is None or time.monotonic() < deadline):
        msg = pubsub.get_message(timeout=0.2)
        if msg is not None:
            click.echo(msg["data"].decode())
            seen += 1


def _url(override: str | None) -> str:
    return redis_url(override)
