"""Put frame batches on the fleet: the blob under its own key, a small RQ job that names it.

Blob, job and the `produced` counter go in one MULTI/EXEC, so a frame is either counted and
queued, or neither. A stream whose queue is deeper than its bound drops new batches (counted).

The waiting batch stays fresh: while the stream has no room, `refresh` puts the newest frame in
place of the frame of the newest batch still in the queue (common/scripts.py REFRESH). A batch's `seq` then names
the newest frame it was refreshed to (its first), its `t_capture` and `t_enqueue` are that frame's.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace

import redis
from redis.typing import EncodableT, FieldT
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now

from common import keys, ledger, scripts
from common.clock import RedisClock
from common.config import ProducerSettings
from common.sources import redact
from common.states import Outcome, StreamState
from common.stream_settings import Routing
from common.wire import Batch, Frame, JobArgs, MsgpackSerializer, encode_batch

log = logging.getLogger(__name__)

#: The one job function producers enqueue; workers refuse every other name.
JOB_FUNC = "worker.jobs.process_batch"
#: A batch blob outlives any sane queue wait; the TTL only guards against leaks.
BLOB_TTL_S = 600
#: A job that runs longer than this is stuck (a batch takes well under a second on a GPU).
JOB_TIMEOUT_S = 120
#: A finished job (and its small result) expires after 10 s: letting RQ expire it is ~0.7 ms a job
#: cheaper than result_ttl=0, which makes RQ delete the job and its registries' entries at once.
RESULT_TTL_S = 10
#: Failed jobs stay a day for `rq info` and post-mortems.
FAILURE_TTL_S = 86_400
#: The stream hash's counters of seqs and batch numbers handed out.
NEXT_SEQ, NEXT_BATCH = "next_seq", "next_batch"
#: A field of the stream hash only `register` writes: without it, Redis lost the stream whole.
REGISTERED_FIELD = "source"


class BatchSink:
    def __init__(self, client: redis.Redis, settings: ProducerSettings, *, clock: RedisClock | None = None) -> None:
        self.client = client
        self.settings = settings
        self.stream = keys.check_stream_id(settings.stream)
        #: Stamps are in Redis time, so workers on other hosts compare like with like.
        self.clock = clock or RedisClock(client, what=f"producer {settings.stream}")
        self.queue = Queue(keys.queue_name(self.stream), connection=client, serializer=MsgpackSerializer)
        #: seq of the first frame of the last batch enqueued (the live view's preview names its frame).
        self.last_seq0: int | None = None
        #: The last batch enqueued and its job id: while it waits, `refresh` may put a newer frame in it.
        self._last: tuple[str, Batch] | None = None
        self._refresh = scripts.REFRESH.bind(client)
        #: Frames this producer has counted `produced` in the ledger, each write acknowledged by Redis.
        #: More than the ledger says afterwards: Redis lost acknowledged writes (a restart from empty,
        #: or a failover before they reached a replica).
        self.counted = 0
        #: The ledger's `produced` when this producer first registered (None: not yet).
        self.baseline: int | None = None
        #: The last values the stream's seq and batch counters gave this producer: they never go back.
        self._seq_floor = self._batch_floor = 0
        self._reconcile = scripts.RECONCILE.bind(client)
        self._enqueue = scripts.ENQUEUE.bind(client)
        #: Names this producer's upload key (a batch before the enqueue script queues it).
        self.token = uuid.uuid4().hex[:12]

    def register(self) -> None:
        s = self.settings
        fields: dict[FieldT, EncodableT] = {
            REGISTERED_FIELD: redact(s.source),  # shown by status readers: never the password
            "model": s.model,
            "imgsz": s.imgsz,
            "max_fps": s.max_fps,
            "batch_size": s.batch_size,
            "queue_bound": s.queue_bound,
            "analytics": s.analytics.model_dump_json() if s.analytics else "",
        }
        fields.update(Routing.from_settings(s).to_hash())
        with self.client.pipeline() as pipe:
            pipe.sadd(keys.STREAMS, self.stream)
            pipe.hset(keys.stream(self.stream), mapping=fields)
            pipe.hget(keys.ledger(self.stream), ledger.PRODUCED)
            produced = pipe.execute()[-1]
        if self.baseline is None:
            self.baseline = int(produced or 0)

    def reconcile(self) -> int:
        """After a failover (or now and then): frames this producer had counted that Redis no longer
        counts are counted produced and dropped_redis_failover, and the seq and batch counters are
        raised back to what this producer already used. The frames counted lost (-1: Redis lost the
        whole ledger, a restart from empty, which the producer reports at exit instead)."""
        if self.baseline is None or not self._batch_floor:
            return 0
        lost, produced = self._reconcile(
            keys=[keys.stream(self.stream), keys.ledger(self.stream)],
            args=[
                NEXT_SEQ,
                self._seq_floor,
                NEXT_BATCH,
                self._batch_floor,
                ledger.PRODUCED,
                self.baseline + self.counted,
                self.baseline,
                Outcome.DROPPED_REDIS_FAILOVER.value,
                REGISTERED_FIELD,
            ],
        )
        lost = int(lost)
        if lost < 0:  # lost whole: from now on, compare with what Redis counts now
            self.baseline = int(produced) - self.counted
        if lost > 0:
            log.warning(
                "stream %s: Redis lost %d frames this producer had counted (acknowledged writes a failover's "
                "new master lacks); counted dropped_redis_failover",
                self.stream,
                lost,
            )
        return lost

    def set_state(self, state: StreamState, reason: str = "") -> None:
        self.client.hset(
            keys.stream(self.stream), mapping={"state": state.value, "reason": reason, "t_state": time.time()}
        )

    def _count(self, n: int, outcome: Outcome) -> None:
        """n frames that never reached a queue: produced, and `outcome`, in one step."""
        with self.client.pipeline() as pipe:
            ledger.count(pipe, self.stream, ledger.PRODUCED, n)
            ledger.count(pipe, self.stream, outcome.value, n)
            pipe.execute()
        self.counted += n

    def count_unreachable(self, n: int) -> None:
        """Frames the producer had while Redis was down: produced, and dropped for that reason."""
        self._count(n, Outcome.DROPPED_UNREACHABLE)

    def count_redis_full(self, n: int) -> None:
        """Frames Redis refused to store (out of memory, read-only): produced, and dropped for that."""
        self._count(n, Outcome.DROPPED_REDIS_FULL)

    def count_skipped(self, n: int) -> None:
        """Frames skipped at the source while the stream had no room (producer/flow.py): produced,
        and dropped for backpressure, without ever being encoded or shipped."""
        self._count(n, Outcome.DROPPED_BACKPRESSURE)

    def count_static(self, n: int) -> None:
        """Frames motion gating held back (producer/motion.py): produced, and skipped_static."""
        self._count(n, Outcome.SKIPPED_STATIC)

    def push(self, frames: list[Frame]) -> bool:
        """Enqueue one batch; False when it was dropped for backpressure. One round trip when the
        stream's counters are where this producer left them (ENQUEUE); two otherwise (the first
        batch, or another producer numbered batches meanwhile)."""
        if self._batch_floor:
            done = self._push_numbered(frames, self._batch_floor + 1, self._seq_floor)
            if done is not None:
                return done
        n = len(frames)
        stream_key = keys.stream(self.stream)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue.key)
            pipe.hincrby(stream_key, NEXT_BATCH, 1)
            pipe.hincrby(stream_key, NEXT_SEQ, n)
            depth, batch_no, seq_end = pipe.execute()
        self._seq_floor, self._batch_floor = max(self._seq_floor, seq_end), max(self._batch_floor, batch_no)
        if depth >= self.settings.queue_bound:
            self._count(n, Outcome.DROPPED_BACKPRESSURE)
            self._say_dropped(depth, n)
            return False
        seq0 = seq_end - n
        batch = self._batch(frames, batch_no, seq0)
        args = JobArgs.for_batch(self.stream, batch_no, n)
        # RQ calls MULTI on the pipeline it is given: the enqueue must be its first command.
        with self.client.pipeline(transaction=True) as pipe:
            job = self.queue.enqueue_call(
                JOB_FUNC,
                kwargs=args.to_kwargs(),
                timeout=JOB_TIMEOUT_S,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                description=f"{self.stream}#{batch_no} ({n} frames)",
                pipeline=pipe,
            )
            pipe.set(args.blob, encode_batch(batch), ex=BLOB_TTL_S)
            pipe.sadd(keys.STREAMS, self.stream)  # again each time: Redis may have restarted empty
            ledger.count(pipe, self.stream, ledger.PRODUCED, n)
            pipe.execute()
        self.counted += n
        self.last_seq0 = seq0
        self._last = (job.id, batch)
        return True

    def _batch(self, frames: list[Frame], batch_no: int, seq0: int) -> Batch:
        s = self.settings
        return Batch(
            stream=self.stream,
            batch=batch_no,
            model=s.model,
            conf=s.conf,
            imgsz=s.imgsz,
            t_enqueue=self.clock.now(),
            frames=[replace(f, seq=seq0 + i) for i, f in enumerate(frames)],
            half=s.half,
            classes=s.analytics.classes if s.analytics else None,
            snapshots=bool(s.analytics and s.analytics.snapshots),
        )

    def _job(self, batch: Batch, args: JobArgs) -> Job:
        """The batch's RQ job, as `Queue.enqueue_call` makes it (queued, on this stream's queue)."""
        n = len(batch.frames)
        job = self.queue.create_job(
            JOB_FUNC,
            kwargs=args.to_kwargs(),
            timeout=JOB_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            description=f"{self.stream}#{batch.batch} ({n} frames)",
            status=JobStatus.QUEUED,
        )
        job.origin, job.enqueued_at = self.queue.name, now()
        job.redis_server_version = self.queue.get_redis_server_version()
        return job

    def _push_numbered(self, frames: list[Frame], batch_no: int, seq0: int) -> bool | None:
        """The batch numbered `batch_no` from `seq0`, in one round trip (ENQUEUE); None when the
        stream's counters are not there (nothing written: the caller numbers it afresh)."""
        n = len(frames)
        batch = self._batch(frames, batch_no, seq0)
        args = JobArgs.for_batch(self.stream, batch_no, n)
        job = self._job(batch, args)
        fields = [v for kv in job.to_dict().items() for v in kv]
        upload = keys.batch_upload(self.stream, self.token)
        call_keys = [
            keys.stream(self.stream),
            self.queue.key,
            keys.RQ_QUEUES,
            job.key,
            args.blob,
            keys.STREAMS,
            keys.ledger(self.stream),
            upload,
        ]
        call_args = [
            NEXT_BATCH,
            NEXT_SEQ,
            batch_no,
            seq0,
            n,
            self.settings.queue_bound,
            self.stream,
            job.id,
            ledger.PRODUCED,
            Outcome.DROPPED_BACKPRESSURE.value,
            *fields,
        ]
        blob = encode_batch(batch)
        for _ in range(2):  # a second time only when Redis did not have the script (loaded, or restarted)
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(upload, blob, ex=BLOB_TTL_S)
                # EVALSHA itself: a script object on a pipeline asks SCRIPT EXISTS first (a round trip)
                pipe.evalsha(self._enqueue.sha, len(call_keys), *call_keys, *call_args)
                stored, reply = pipe.execute(raise_on_error=False)
            if isinstance(stored, Exception):
                raise stored
            if not isinstance(reply, redis.exceptions.NoScriptError):
                break
            self.client.script_load(scripts.ENQUEUE.source)
        if isinstance(reply, Exception):
            raise reply
        if int(reply[0]) == 0:
            self._batch_floor, self._seq_floor = (
                max(self._batch_floor, int(reply[1])),
                max(self._seq_floor, int(reply[2])),
            )
            return None
        self._batch_floor, self._seq_floor = batch_no, seq0 + n
        self.counted += n
        if int(reply[0]) == 2:
            self._say_dropped(int(reply[1]), n)
            return False
        self.last_seq0 = seq0
        self._last = (job.id, batch)
        return True

    def _say_dropped(self, depth: int, n: int) -> None:
        log.warning(
            "stream %s: queue depth %d >= %d, dropped a batch of %d", self.stream, depth, self.settings.queue_bound, n
        )

    def refreshable(self) -> bool:
        """A batch of one frame was enqueued (it may still wait): `refresh` can try it."""
        return self._last is not None and len(self._last[1].frames) == 1

    def refresh(self, frame: Frame) -> int | None:
        """Put `frame` in place of the frame of the last batch enqueued, if that batch still waits in
        the queue; the seq it got (the batch's), or None when a worker has taken it already (or
        there is no batch of one frame to refresh). The superseded frame is counted produced and
        dropped_backpressure, in the same step as the blob is written."""
        last = self._last
        if last is None or len(last[1].frames) != 1:
            return None
        job_id, old = last
        # The superseded frame's gated count goes with its replacement (the tracker ages tracks by it).
        frame = replace(frame, seq=old.frames[0].seq, gated=frame.gated + old.frames[0].gated)
        batch = replace(old, t_enqueue=self.clock.now(), frames=[frame])
        done = self._refresh(
            keys=[self.queue.key, keys.batch_blob(self.stream, old.batch), keys.ledger(self.stream)],
            args=[job_id, encode_batch(batch), BLOB_TTL_S, ledger.PRODUCED, Outcome.DROPPED_BACKPRESSURE.value],
        )
        if not done:
            self._last = None  # taken: it is not refreshed again
            return None
        self.counted += 1  # the superseded frame
        self._last = (job_id, batch)
        return frame.seq
