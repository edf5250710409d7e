"""`rtai sink mqtt URL --topic P` and `rtai sink webhook URL --secret S`."""

from __future__ import annotations

import click

from common.config import redis_url
from common.proctitle import set_title
from common.redis_client import connect
from common.shards import GIVE_UP_S, Shards
from common.stopping import run_loops, stop_on_signals

from .sink import OneAtATime, SinkRunner, Target
from .webhook_sink import DELIVERY_TIMEOUT_S

FROM_START_HELP = "A new sink delivers the whole event log (default: only events logged from now on)."


@click.group()
def sink() -> None:
    """Deliver the event log to MQTT or a webhook, at least once (a Redis consumer group per sink)."""


def _run(shards: Shards, target: Target, name: str, from_start: bool, url: str) -> None:
    """One runner per Redis shard (each shard's event log holds its streams' events), one target."""
    from common.sources import redact  # noqa: PLC0415

    shared: Target = OneAtATime(target) if shards.sharded else target
    where = {i: f" on {shards.label(i)}" if shards.sharded else "" for i in range(len(shards))}
    runners = [SinkRunner(c, shared, name=name, from_start=from_start, where=where[i]) for i, c in shards.clients()]
    set_title(f"rtai-sink:{name}")
    logs = f"the event logs of {len(shards)} Redis shards" if shards.sharded else "the event log"
    what = f"the whole of {logs}" if from_start else f"new events of {logs}"
    click.echo(f"rtai sink {name}: delivering {what} to {redact(url)}")
    stop_on_signals(runners)
    try:
        run_loops(runners, "sink")
    finally:
        target.close()


def _shards(override: str | None) -> Shards:
    """Every shard; the home shard checked now (a wrong URL is said at start). Another shard that
    does not answer stops only its own log's deliveries: its runner tries it again meanwhile."""
    url = redis_url(override)
    connect(url.split()[0])
    return Shards.from_url(url)


@sink.command()
@click.argument("url")
@click.option("--topic", default="rtai", show_default=True, help="Topic prefix.")
@click.option("--name", default="mqtt", show_default=True, help="Sink name (its consumer group and counters).")
@click.option("--from-start", is_flag=True, help=FROM_START_HELP)
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def mqtt(url: str, topic: str, name: str, from_start: bool, redis_url: str | None) -> None:
    """Publish events to an MQTT broker at URL (mqtt://host:port), QoS 1."""
    from .mqtt_sink import MqttTarget  # noqa: PLC0415

    shards = _shards(redis_url)
    target = MqttTarget(url, prefix=topic, client_id=f"rtai-sink-{name}")
    _run(shards, target, name, from_start, f"{url} (topics {topic}/...)")


@sink.command()
@click.argument("url")
@click.option("--secret", required=True, help="HMAC-SHA256 key of the X-RTAI-Signature header.")
@click.option("--name", default="webhook", show_default=True, help="Sink name (its consumer group and counters).")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Most POSTs per second.")
@click.option("--attempts", type=int, default=5, show_default=True, help="Tries before an event is dead-lettered.")
@click.option(
    "--timeout", type=float, default=DELIVERY_TIMEOUT_S, show_default=True, help="Seconds one POST may take in all."
)
@click.option("--from-start", is_flag=True, help=FROM_START_HELP)
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def webhook(
    url: str,
    secret: str,
    name: str,
    rate: float,
    attempts: int,
    timeout: float,
    from_start: bool,
    redis_url: str | None,
) -> None:
    """POST each event as signed JSON to URL, retried with backoff."""
    from .webhook_sink import WebhookTarget  # noqa: PLC0415

    shards = _shards(redis_url)
    # Its counts are written inside the delivery that every shard's runner waits on: with shards, a
    # hung home shard costs each count GIVE_UP_S, not 10 s and three retries.
    counts = (
        connect(shards.urls[0], check=False, socket_timeout=GIVE_UP_S, retries=0) if shards.sharded else shards.home
    )
    target = WebhookTarget(url, secret=secret, client=counts, name=name, rate=rate, attempts=attempts, timeout=timeout)
    _run(shards, target, name, from_start, url)
