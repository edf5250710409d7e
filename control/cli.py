"""The `rtai` command: one click group; role subcommands are imported only when they run.

`rtai --help` (or `python -m control --help`) imports neither torch nor the producer/worker
packages: role subcommands are named here by import path and loaded on first use.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from common.config import DECODES, redis_url, setup_logging
from common.exitcodes import run_main

if TYPE_CHECKING:
    from common.shards import Shards

#: name -> ("module:attribute", one-line help). Loaded on first use.
LAZY_COMMANDS = {
    "producer": ("producer.cli:producer", "Decode a video source and feed its frames to the fleet."),
    "worker": ("worker.cli:worker", "Run detection jobs (one process, or one per GPU with --all-gpus)."),
    "gpus": ("control.gpus:gpus", "GPUs, recommended strategy and a short benchmark (the guide's gpu_test.py)."),
    "api": ("control.api.cli:api", "Serve the REST control plane on port 2000."),
    "models": ("control.models_cli:models_group", "Model names this machine can serve; pull stock weights."),
    "tracker": ("analytics.cli:tracker", "Track streams declared with --track; turn tracks into zone/line events."),
    "events": ("analytics.cli:events", "Print a stream's events (zones, lines, dwell, appeared/lost)."),
    "sink": ("analytics.sinks_cli:sink", "Deliver events to MQTT or a webhook (at least once)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[name][0].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(80)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """realtime-ai: live video to object detections on every GPU, with every frame accounted for."""
    setup_logging(verbose)


@cli.command()
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between redraws (--watch).")
def status(redis_url: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Streams (state, ledger, queue depth, latency), workers and GPUs (frames, fps, GPU stats)."""
    from common.shards import GIVE_UP_S  # noqa: PLC0415

    from . import status as status_mod  # noqa: PLC0415
    from .printable import printable  # noqa: PLC0415

    client = _shards(redis_url, give_up_s=GIVE_UP_S)  # a hung shard is shown down within seconds
    if watch and not as_json:
        from .status_view import watch as watch_tables  # noqa: PLC0415

        watch_tables(client, interval)  # Ctrl-C ends it (exit 130), as it ends the plain --watch
        return
    while True:
        report = status_mod.collect(client)
        # JSON escapes control characters itself; the text report has them replaced (printable).
        text = json.dumps(report, indent=2, sort_keys=True) if as_json else status_mod.render(printable(report))
        if watch:
            click.clear()
            click.echo(time.strftime("%H:%M:%S ") + "rtai status (Ctrl-C to quit)")
        click.echo(text)
        if not watch:
            return
        time.sleep(interval)


@cli.command()
@click.argument("streams", nargs=-1)
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--replay", type=int, default=0, help="First print up to N recent results from history.")
@click.option("--count", type=int, default=None, help="Exit after N results.")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--tracks", is_flag=True, help="Tracked frames (rtai tracker): in seq order, boxes with track ids.")
@click.option("--wait", is_flag=True, help="Wait for STREAMS even if no such stream is declared yet.")
def subscribe(
    streams: tuple[str, ...],
    redis_url: str | None,
    replay: int,
    count: int | None,
    timeout: float | None,
    as_json: bool,
    tracks: bool,
    wait: bool,
) -> None:
    """Print detections of STREAMS (all streams when none is named) as they arrive."""
    from analytics.cli import check_known  # noqa: PLC0415
    from common import keys  # noqa: PLC0415
    from common.shards import GIVE_UP_S  # noqa: PLC0415

    from .subscriber import ClassNames, Subscriber, subscriber  # noqa: PLC0415

    shards = _shards(redis_url, give_up_s=GIVE_UP_S)  # with shards: a hung one is given up on within seconds
    for stream in streams if not wait else ():
        check_known(shards, keys.check_stream_id(stream), command="subscribe")
    if tracks:
        _subscribe_tracks(shards, list(streams), replay, count, timeout, as_json=as_json)
        return
    sub = subscriber(shards, list(streams))
    names = ClassNames(sub.class_names)
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    for result in sub.results(replay=replay, deadline=deadline):
        if as_json:
            click.echo(json.dumps(result.to_map()))
        else:
            click.echo(Subscriber.describe(result, names(result.model)))
        seen += 1
        if count is not None and seen >= count:
            break


def _subscribe_tracks(
    shards: Shards, streams: list[str], replay: int, count: int | None, timeout: float | None, *, as_json: bool
) -> None:
    from analytics.feed import tracked_frames  # noqa: PLC0415

    from .subscriber import ClassNames, Subscriber, describe_tracked  # noqa: PLC0415

    if not streams:
        raise click.UsageError("--tracks needs the stream(s) to follow")
    deadline = None if timeout is None else time.monotonic() + timeout
    names = ClassNames(Subscriber(shards.home, []).class_names)
    for seen, frame in enumerate(tracked_frames(shards, streams, replay=replay, deadline=deadline), 1):
        if as_json:
            click.echo(json.dumps(frame.to_map()))
        else:
            click.echo(describe_tracked(frame, names(frame.model or "")))
        if count is not None and seen >= count:
            break


@cli.command()
@click.option("--source", "sources", multiple=True, help="Camera URL or video file (repeatable); default: the demo.")
@click.option("--model", default=None, help="Model for every stream (default rtai-shapes).")
@click.option("--imgsz", type=int, default=None, help="Inference size (default 320).")
@click.option("--max-fps", type=float, default=None, help="Frames per second sampled per stream (default 30).")
@click.option("--batch-size", type=int, default=None, help="Frames per job (default 4).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda (all GPUs) or cuda:N.")
@click.option("--workers", type=int, default=1, show_default=True, help="CPU worker processes (without GPUs).")
@click.option("--threads", type=int, default=None, help="Torch threads per CPU worker (default: cores/workers).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--show", is_flag=True, help="Also print every detection.")
@click.option("--api-port", type=int, default=None, help="Also serve the REST API on 127.0.0.1:PORT (e.g. 2000).")
@click.option(
    "--export/--no-export",
    default=True,
    show_default=True,
    help="On a CPU host, export the model to ONNX first (once, cached) so workers run ONNX Runtime.",
)
def up(sources: tuple[str, ...], **options: object) -> None:
    """Run the whole fleet here: Redis, workers, producers (the demo clip by default)."""
    from .up import UpOptions, run  # noqa: PLC0415

    run(UpOptions(sources=list(sources), **options))  # type: ignore[arg-type]


@cli.group()
def stream() -> None:
    """Declare the streams producer daemons run (desired state in Redis)."""


@stream.command("add")
@click.argument("stream_id")
@click.option("--source", required=True, help="rtsp://, http:// URL, a file, or demo.")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--max-fps", type=float, default=None, help="Frames per second sampled (default 30).")
@click.option("--batch-size", type=int, default=None, help="Frames per job (default 4).")
@click.option("--imgsz", type=int, default=None, help="Long side frames are resized to; the inference size (320).")
@click.option("--model", default=None, help="A model name (default rtai-shapes; see Models and engines).")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default 0.25).")
@click.option("--loop/--no-loop", default=None, help="Loop a video file (default off).")
@click.option(
    "--decode",
    type=click.Choice(DECODES),
    default=None,
    help="Video decode (see rtai producer --decode; default auto-cpu).",
)
@click.option("--track", is_flag=True, help="Track objects (rtai tracker); zones, lines and dwell need it.")
@click.option(
    "--tracker",
    type=click.Choice(["bytetrack", "ultralytics-bytetrack", "botsort"]),
    default=None,
    help="Tracker (bytetrack: ours; the others are Ultralytics').",
)
@click.option("--classes", default=None, help="Class names to keep, comma-separated (the model drops the rest).")
@click.option("--zone", "zones", multiple=True, help="name=x,y:x,y:x,y... (normalized polygon; repeatable).")
@click.option("--line", "lines", multiple=True, help="name=x,y:x,y (directed: a->b; repeatable).")
@click.option("--dwell-s", type=float, default=None, help="A dwell event after this long in a zone.")
@click.option("--snapshots", is_flag=True, help="Keep the frame of each event (GET .../snapshot/STREAM/SEQ).")
@click.option("--snapshot-ttl-s", type=int, default=None, help="How long snapshots are kept (3600).")
@click.option("--motion", is_flag=True, help="Motion gating: static frames skip inference (counted skipped_static).")
@click.option(
    "--motion-mask",
    "motion_masks",
    multiple=True,
    help="x1,y1,x2,y2: a normalized rectangle motion gating ignores (repeatable; implies --motion).",
)
def stream_add(stream_id: str, redis_url: str | None, **flags: object) -> None:
    """Declare STREAM_ID; a producer daemon (`rtai producer` without --source) picks it up."""
    from common import desired  # noqa: PLC0415
    from common.config import ProducerSettings, build  # noqa: PLC0415
    from common.shards import GIVE_UP_S  # noqa: PLC0415

    url = _url(redis_url)
    analytics = _analytics_flags(flags)
    settings = build(ProducerSettings, stream=stream_id, redis_url=url, analytics=analytics, **flags)
    shards = _shards(redis_url, give_up_s=GIVE_UP_S)  # a hung shard is said in seconds, as by the API
    desired.put(shards.home, settings, data=shards.for_stream(stream_id) if shards.sharded else None)
    click.echo(f"stream {stream_id} declared; a producer daemon will claim it")


@stream.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def stream_load(path: Path, redis_url: str | None) -> None:
    """Declare every stream of a YAML camera list (see cameras.yml)."""
    from common import desired  # noqa: PLC0415
    from common.shards import GIVE_UP_S  # noqa: PLC0415

    url = _url(redis_url)
    shards = _shards(redis_url, give_up_s=GIVE_UP_S)
    declared = desired.load_file(shards.home, path, url, data_for=shards.for_stream if shards.sharded else None)
    click.echo(f"declared {len(declared)} stream(s): {', '.join(declared) or '-'}")


@stream.command("rm")
@click.argument("stream_id")
@click.option("--purge", is_flag=True, help="Also delete every key of the stream now (ledger, history, events...).")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def stream_rm(stream_id: str, purge: bool, redis_url: str | None) -> None:
    """Stop running STREAM_ID (its producer daemon stops it within a second); its keys expire in 7 days."""
    from common import desired, keys  # noqa: PLC0415
    from common.shards import GIVE_UP_S  # noqa: PLC0415

    shards = _shards(redis_url, give_up_s=GIVE_UP_S)
    client = shards.home
    stream_id = keys.check_stream_id(stream_id)
    data = shards.for_stream(stream_id) if shards.sharded else None
    if purge:
        known = (data or client).sismember(keys.STREAMS, stream_id) or stream_id in desired.streams(client)
        if not known:
            raise click.ClickException(f"no stream {stream_id!r} is declared or known")
        purged = desired.purge(client, stream_id, data=data)
        click.echo(f"stream {stream_id} removed and purged ({purged} keys deleted)")
        return
    if not desired.remove(client, stream_id, data=data):
        raise click.ClickException(f"no stream {stream_id!r} is declared")
    click.echo(f"stream {stream_id} removed (its keys expire in {keys.REMOVED_TTL_S // 86400} days; --purge: now)")


@stream.command("ls")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def stream_ls(redis_url: str | None) -> None:
    """List declared streams and which producer runs each."""
    from common import desired, keys  # noqa: PLC0415
    from common.redis_client import connect  # noqa: PLC0415
    from common.replies import text  # noqa: PLC0415
    from common.sources import redact  # noqa: PLC0415

    client = connect(_url(redis_url).split()[0])  # the home shard holds the desired state and claims
    for sid in desired.streams(client):
        entry = desired.get(client, sid) or {"settings": {}}
        owner = client.get(keys.claim(sid))
        source = redact(str(entry["settings"].get("source", "?")))
        click.echo(f"{sid}  {source}  {'run by ' + text(owner) if owner else desired.unclaimed_reason(client, sid)}")


@stream.command("moves")
@click.argument("new_urls")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
def stream_moves(new_urls: str, redis_url: str | None) -> None:
    """List the streams that would live on another shard if the fleet's Redis URL list became
    NEW_URLS (a quoted, space-separated list). Each must be drained before the fleet moves to the new
    list (docs/scaling.md, "Adding a shard"). Exit 0 either way; streams of a shard that does not
    answer now are not listed, and that is said."""
    import redis  # noqa: PLC0415

    from common import desired, keys  # noqa: PLC0415
    from common.redis_client import describe  # noqa: PLC0415
    from common.replies import texts  # noqa: PLC0415
    from common.shards import GIVE_UP_S, Shards  # noqa: PLC0415

    old = _shards(redis_url, give_up_s=GIVE_UP_S)
    new = Shards.from_url(new_urls)
    streams = set(desired.streams(old.home))
    for i, client in old.clients():
        try:
            streams |= set(texts(client.smembers(keys.STREAMS)))
        except redis.RedisError as exc:
            click.echo(
                f"{old.label(i)} does not answer ({describe(exc)}): its undeclared streams are not listed", err=True
            )
    moved = [(s, old.index_for(s), new.index_for(s)) for s in sorted(streams)]
    moved = [(s, a, b) for s, a, b in moved if old.ids[a] != new.ids[b]]
    for s, a, b in moved:
        click.echo(f"{s}  {old.label(a)} -> {new.label(b)}")
    click.echo(f"{len(moved)} of {len(streams)} stream(s) move", err=True)


def _analytics_flags(flags: dict[str, object]) -> dict[str, object] | None:
    """Pop the analytics flags of `stream add` into an AnalyticsSettings map (None when none is given)."""
    from common.analytics_settings import parse_shape  # noqa: PLC0415

    track, tracker = flags.pop("track"), flags.pop("tracker")
    classes, zones, lines = flags.pop("classes"), flags.pop("zones"), flags.pop("lines")
    dwell_s, snapshots, ttl = flags.pop("dwell_s"), flags.pop("snapshots"), flags.pop("snapshot_ttl_s")
    from producer.cli import motion_flags  # noqa: PLC0415

    motion = motion_flags(bool(flags.pop("motion")), cast(tuple[str, ...], flags.pop("motion_masks")))
    if not (track or tracker or classes or zones or lines or dwell_s or snapshots or motion):
        return None
    out: dict[str, object] = {"snapshots": bool(snapshots)}
    if motion is not None:
        out["motion"] = motion
    try:
        out["zones"] = [
            dict(zip(("name", "points"), parse_shape(z), strict=True)) for z in cast(tuple[str, ...], zones)
        ]
        out["lines"] = [
            dict(zip(("name", "points"), parse_shape(ln), strict=True)) for ln in cast(tuple[str, ...], lines)
        ]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if classes:
        out["classes"] = [c.strip() for c in str(classes).split(",") if c.strip()]
    if track or tracker or zones or lines or dwell_s:
        out["track"] = {"tracker_type": tracker or "bytetrack"}
    if dwell_s:
        out["dwell_s"] = dwell_s
    if ttl:
        out["snapshot_ttl_s"] = ttl
    return out


def _url(override: str | None) -> str:
    return redis_url(override)


def _shards(override: str | None, *, give_up_s: float | None = None) -> Shards:
    """The fleet's shards (one, unless the URL names several); a wrong URL for the home shard
    fails now, saying why. `give_up_s`: a reader of every shard gives up on a hung one that soon."""
    from common.redis_client import connect  # noqa: PLC0415
    from common.shards import Shards  # noqa: PLC0415

    shards = Shards.from_url(_url(override), give_up_s=give_up_s)
    connect(shards.urls[0]).close()
    return shards


def main() -> None:
    run_main(cli)


if __name__ == "__main__":
    main()
