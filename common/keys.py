"""Every Redis key and channel realtime-ai uses, built here and nowhere else.

With several Redis shards (common/shards.py): a key named for a stream lives on the stream's
shard, a worker's keys on every shard it serves, the control plane's (desired, claims, daemons,
camera-list markers) on the home shard, and each shard has its own event log, of its streams'
events (docs/design.md, "Shards").

key                                  type     TTL              holds
rtai:streams                         SET      none             ids of streams the fleet knows
rtai:stream:<stream>                 HASH     none             stream settings and producer state
rtai:ledger:<stream>                 HASH     none             produced / published / dropped_* / failed
rtai:batch:<stream>:<batch>          STRING   BLOB_TTL_S       msgpack batch of frames (one job's input)
rtai:upload:<stream>:<producer>      STRING   BLOB_TTL_S       a producer's next batch, renamed to its blob once queued
rtai:settled:<stream>:<batch>        STRING   SETTLED_TTL_S    marker: this batch's frames are accounted for
rtai:attempts:<stream>               HASH     ATTEMPTS_TTL_S   batch -> failed attempts (poison detection)
rtai:gpus:<stream>                   HASH     none             gpu label -> frames of the stream it published
rtai:latency:<stream>                HASH     none             latency histogram: le bucket -> count, sum_ms, count
rtai:routing:<stream>:slots          ZSET     60 s             worker -> lease expiry (pinned / max_workers streams)
rtai:servers:<stream>                ZSET     SERVERS_TTL_S    worker -> expiry ms: workers taking the stream (credits)
rtai:history:<stream>                STREAM   MAXLEN ~         recent results, for late subscribers
rtai:results:<stream>                channel  -                live results, one msgpack message per frame
rtai:model:<variant>:names           STRING   none             msgpack list of class names of a model
rtai:preview:<stream>                STRING   PREVIEW_TTL_S    msgpack {seq, w, h, t, jpeg}: the newest small preview
rtai:previews:<stream>               channel  -                the same preview, pushed as it is written (live view)
rtai:preview:<stream>:watch          STRING   PREVIEW_WATCH_TTL_S  a stream page is open: previews at the faster rate
rtai:desired                         SET      none             stream ids producer daemons should run
rtai:desired:<stream>                STRING   none             msgpack map of the stream's producer settings
rtai:claim:<stream>                  STRING   lease (ms)       producer daemon that runs the stream now
rtai:daemons                         ZSET     DAEMON_TTL_MS    producer daemon -> Redis-time ms its heartbeat lapses
rtai:removed:<stream>                STRING   REMOVED_TTL_S    marker: removed; views drop it, workers leave its state
rtai:streamsfile:<digest>            STRING   none             marker: a camera list (path + content) is declared
rtai:workers                         SET      none             names of workers that registered
rtai:worker:<name>                   HASH     WORKER_TTL_S     a worker's counters, device and GPU stats
rtai:worker:<name>:alive             STRING   lease (ms)       present while the worker lives
rtai:inflight:<name>                 HASH     none             job id -> RQ queue key, jobs a worker holds
rtai:fault:<point>                   STRING   FAULT_TTL_S      chaos tests: the one worker that dies at a point
rtai:kills:<job id>                  STRING   KILLS_TTL_S      times a job's worker died holding it (crash loops)
rtai:fleet                           HASH     none             fleet-wide counters (rejected jobs)
rtai:trackclaim:<stream>             STRING   lease (ms)       tracking process that tracks the stream now
rtai:trackpos:<stream>               HASH     none             cursor (history id) + next_seq: where tracking resumes
rtai:trackids:<stream>               STRING   none             last track id handed out (INCRBY blocks; never reused)
rtai:trackstats:<stream>             HASH     none             tracked / skipped / late frames, events
rtai:tracks:<stream>                 channel  -                tracked frames in seq order (msgpack, one per frame)
rtai:trackhist:<stream>              STREAM   MAXLEN ~         recent tracked frames
rtai:events:<stream>                 channel  -                events of a stream (JSON)
rtai:eventlog                        STREAM   MAXLEN ~         durable event log of every stream (JSON), read by sinks
rtai:zonecount:<stream>              HASH     none             zone -> tracks in it now
rtai:eventcount:<stream>             HASH     none             event type -> count
rtai:snapshot:<stream>:<seq>         STRING   SNAPSHOT_*_TTL_S  msgpack {w, h, jpeg, boxes}: a frame kept for events
rtai:sink:<name>                     HASH     none             delivered/failed/dead_letter/bad/lost_trimmed
rtai:eventseq                        STRING   none             ordinal of the newest rtai:eventlog entry (field n)
rtai:streamevents:<stream>           STREAM   MAXLEN ~         a stream's own recent events (JSON), for /events?stream=
rtai:snapindex:<stream>              ZSET     none             kept snapshots "<seq>:<bytes>", scored by expiry
rq:queue:rtai:<stream>               LIST     none             RQ queue of a stream (RQ builds the key)
rq:wip:rtai:<stream>                 ZSET     RQ's             RQ's started-job registry (job_id:execution_id)
rq:suspended                         STRING   none             set by `rq suspend`: workers take no new job
rq:queues                            SET      none             RQ's set of queues (`rq info` lists them)
rq:worker:<name>                     HASH     RQ's             RQ's record of a worker (its `state`: idle / busy)
rq:job:<job id>                      HASH     RQ's             RQ's record of a job (status, timestamps, result)
"""

from __future__ import annotations

import re

from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.suspension import WORKERS_SUSPENDED
from rq.worker import Worker

from .errors import ConfigError

PREFIX = "rtai:"

#: Stream ids go into key names and channel names: keep them to a safe alphabet. \A...\Z so that
#: neither match nor fullmatch lets a trailing newline through (Python's `$` would).
STREAM_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
#: The same rule for JSON Schema / pydantic (Rust regex): there `$` is the end of the text.
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

STREAMS = PREFIX + "streams"
DESIRED = PREFIX + "desired"
WORKERS = PREFIX + "workers"
FLEET = PREFIX + "fleet"
#: Prefix of the per-job kill counters (keys.kills builds them).
KILLS_PREFIX = PREFIX + "kills:"
#: A kill counter outlives any crash loop of its job by far.
KILLS_TTL_S = 3600
#: RQ's key prefixes of a queue and of its started-job registry (RQ builds both keys).
RQ_QUEUE_PREFIX = Queue.redis_queue_namespace_prefix
RQ_STARTED_PREFIX = StartedJobRegistry.key_template.format("")
#: RQ's set of every queue's key (`Queue.all`, `rq info`); the enqueue script adds a stream's queue.
RQ_QUEUES = Queue.redis_queues_keys
#: RQ's own flag (`rq suspend` / `rq resume`); our dequeue script honours it.
RQ_SUSPENDED = WORKERS_SUSPENDED
#: RQ's key prefix of a worker's hash.
RQ_WORKER_PREFIX = Worker.redis_worker_namespace_prefix


def check_stream_id(stream: str) -> str:
    if not isinstance(stream, str) or not STREAM_ID_RE.fullmatch(stream):
        raise ConfigError(
            f"stream id {stream!r} is not valid: use 1-64 letters, digits, '_', '.', '-' (first a letter or digit)"
        )
    return stream


def stream(stream_id: str) -> str:
    return f"{PREFIX}stream:{stream_id}"


def desired(stream_id: str) -> str:
    return f"{PREFIX}desired:{stream_id}"


def claim(stream_id: str) -> str:
    return f"{PREFIX}claim:{stream_id}"


def streams_file(digest: str) -> str:
    """Marker written with a camera list's declaration; gone means Redis forgot the list."""
    return f"{PREFIX}streamsfile:{digest}"


def ledger(stream_id: str) -> str:
    return f"{PREFIX}ledger:{stream_id}"


def batch_blob(stream_id: str, batch: int) -> str:
    return f"{PREFIX}batch:{stream_id}:{batch}"


def batch_upload(stream_id: str, producer: str) -> str:
    """Where one producer writes its next batch before the enqueue script names it (RENAME: no copy)."""
    return f"{PREFIX}upload:{stream_id}:{producer}"


def settled(stream_id: str, batch: int) -> str:
    return f"{PREFIX}settled:{stream_id}:{batch}"


def attempts(stream_id: str) -> str:
    return f"{PREFIX}attempts:{stream_id}"


def stream_gpus(stream_id: str) -> str:
    return f"{PREFIX}gpus:{stream_id}"


def latency_hist(stream_id: str) -> str:
    return f"{PREFIX}latency:{stream_id}"


def slots(stream_id: str) -> str:
    return f"{PREFIX}routing:{stream_id}:slots"


#: A stream's set of serving workers expires when no worker renews it (workers renew every second).
SERVERS_TTL_S = 10


def servers(stream_id: str) -> str:
    """Workers that take the stream's jobs now, scored by when that lapses (Redis time, ms): the
    producer's credits (producer/flow.py)."""
    return f"{PREFIX}servers:{stream_id}"


def history(stream_id: str) -> str:
    return f"{PREFIX}history:{stream_id}"


def results_channel(stream_id: str) -> str:
    return f"{PREFIX}results:{stream_id}"


def results_pattern() -> str:
    return f"{PREFIX}results:*"


#: A preview is for live eyes only: it goes stale within seconds.
PREVIEW_TTL_S = 5
#: The API renews a stream's watch flag every second while a stream page is open.
PREVIEW_WATCH_TTL_S = 3


def preview(stream_id: str) -> str:
    return f"{PREFIX}preview:{stream_id}"


def preview_channel(stream_id: str) -> str:
    return f"{PREFIX}previews:{stream_id}"


def previews_pattern() -> str:
    return f"{PREFIX}previews:*"


def preview_watch(stream_id: str) -> str:
    return f"{PREFIX}preview:{stream_id}:watch"


def model_names(variant: str) -> str:
    return f"{PREFIX}model:{variant}:names"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def rq_worker(name: str) -> str:
    """RQ's hash of a worker (RQ builds the key); its `state` says idle or busy."""
    return f"{RQ_WORKER_PREFIX}{name}"


def rq_job(job_id: str) -> str:
    """RQ's hash of a job (RQ builds the key)."""
    return Job.key_for(job_id)


def rq_started(queue_key_: str) -> str:
    """RQ's started-job registry of a queue (its `job:execution` members)."""
    return RQ_STARTED_PREFIX + queue_key_[len(RQ_QUEUE_PREFIX) :]


def worker_alive(name: str) -> str:
    return f"{PREFIX}worker:{name}:alive"


def inflight(name: str) -> str:
    return f"{PREFIX}inflight:{name}"


def fault(point: str) -> str:
    return f"{PREFIX}fault:{point}"


def kills(job_id: str) -> str:
    return KILLS_PREFIX + job_id


def queue_name(stream_id: str) -> str:
    """The RQ queue name of a stream (RQ prefixes it with rq:queue:)."""
    return f"{PREFIX}{stream_id}"


def queue_key(stream_id: str) -> str:
    return Queue.redis_queue_namespace_prefix + queue_name(stream_id)


#: Every stream's events, in one durable log (sinks read it through a consumer group).
EVENT_LOG = PREFIX + "eventlog"
#: A frame a worker keeps for a stream with snapshots lives this long unless an event extends it.
SNAPSHOT_PENDING_TTL_S = 60


def track_claim(stream_id: str) -> str:
    return f"{PREFIX}trackclaim:{stream_id}"


def track_position(stream_id: str) -> str:
    return f"{PREFIX}trackpos:{stream_id}"


def track_ids(stream_id: str) -> str:
    return f"{PREFIX}trackids:{stream_id}"


def track_stats(stream_id: str) -> str:
    return f"{PREFIX}trackstats:{stream_id}"


def tracks_channel(stream_id: str) -> str:
    return f"{PREFIX}tracks:{stream_id}"


def tracks_pattern() -> str:
    return f"{PREFIX}tracks:*"


def tracks_history(stream_id: str) -> str:
    return f"{PREFIX}trackhist:{stream_id}"


def events_channel(stream_id: str) -> str:
    return f"{PREFIX}events:{stream_id}"


def events_pattern() -> str:
    return f"{PREFIX}events:*"


def zone_counts(stream_id: str) -> str:
    return f"{PREFIX}zonecount:{stream_id}"


def event_counts(stream_id: str) -> str:
    return f"{PREFIX}eventcount:{stream_id}"


def snapshot(stream_id: str, seq: int) -> str:
    return f"{PREFIX}snapshot:{stream_id}:{seq}"


def sink(name: str) -> str:
    return f"{PREFIX}sink:{name}"


#: Ordinal of the last event in EVENT_LOG: a sink tells from a gap in it how many events were trimmed unread.
EVENT_SEQ = PREFIX + "eventseq"


def stream_events(stream_id: str) -> str:
    return f"{PREFIX}streamevents:{stream_id}"


def snapshot_index(stream_id: str) -> str:
    return f"{PREFIX}snapindex:{stream_id}"


#: A producer daemon's heartbeat in DAEMONS lasts this long (it beats with its claim renewals, 0.75 s).
DAEMON_TTL_MS = 5000
DAEMONS = PREFIX + "daemons"
#: A removed stream's keys (ledger, history, tracks, ...) expire this long after `rm` (`rm --purge`: now).
REMOVED_TTL_S = 7 * 24 * 3600


def removed(stream_id: str) -> str:
    return f"{PREFIX}removed:{stream_id}"


def stream_keys(stream_id: str) -> list[str]:
    """Every key of one stream that has no expiry of its own (what `rm` expires and `rm --purge` deletes)."""
    return [
        stream(stream_id),
        ledger(stream_id),
        attempts(stream_id),
        stream_gpus(stream_id),
        latency_hist(stream_id),
        history(stream_id),
        track_position(stream_id),
        track_ids(stream_id),
        track_stats(stream_id),
        tracks_history(stream_id),
        zone_counts(stream_id),
        event_counts(stream_id),
        stream_events(stream_id),
        snapshot_index(stream_id),
        queue_key(stream_id),
    ]


def stream_key_patterns(stream_id: str) -> list[str]:
    """SCAN patterns of one stream's per-batch and per-frame keys (they expire by themselves)."""
    sid = check_stream_id(stream_id)
    # RQ's registries of the stream's queue (rq:finished:rtai:<stream>, rq:failed:..., rq:wip:...).
    return [
        f"{PREFIX}batch:{sid}:*",
        f"{PREFIX}settled:{sid}:*",
        f"{PREFIX}snapshot:{sid}:*",
        f"rq:*:{queue_name(sid)}",
    ]
