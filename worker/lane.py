"""A worker's hold on one shard (common/shards.py): everything that reads or writes that shard's
Redis, so that every job moves, settles and is recorded on the shard that holds its stream.

With one Redis the worker has one lane. With several, it has one per shard, each with its own
lease (and reaper), in-flight hash, RQ worker record, routing, queues and prefetcher; the loop
(worker/loop.py) takes each group from one lane and runs it there. A lane whose Redis fails is
set aside with backoff while the other lanes keep working; when its Redis answers again, it first
requeues whatever its in-flight hash holds (this worker holds nothing on it by then).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from common import keys
from common.backoff import Backoff
from common.config import host_name
from common.redis_client import describe, write_rejected
from common.states import WorkerState
from common.wire import packb

from .broker import Admission, Attempts, RedisBroker, Taken, rq_compat
from .intake import Intake
from .jobs import ALLOWED
from .lease import WORKER_TTL_S, Lease
from .outcomes import Outcomes
from .prefetch import Prefetcher
from .queues import Queues
from .routing import Router
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Dequeue retry delays are shortened by up to this fraction: workers that lost Redis together spread out.
DEQUEUE_JITTER = 0.25
#: While Redis refuses writes (full), a dequeue is retried at most this far apart.
HOLD_RETRY_MAX_S = 0.5
#: A lane set aside pings its Redis with backoff up to this pause.
PROBE_MAX_S = 5.0


class Lane:
    def __init__(
        self, rt: Runtime, *, label: str, state: Callable[[], WorkerState], stopping: Callable[[], bool]
    ) -> None:
        self.rt = rt
        self.client = rt.client
        self.name = rt.name
        #: How logs name the shard ("" with one Redis).
        self.label = label
        self.broker = RedisBroker(self.client, self.name)
        self.record = rq_compat.WorkerRecord(self.client, self.name)
        self.router = Router(self.client, name=self.name, gpu=rt.gpu)
        self.queues = Queues(self.client, self.router, self.record, lambda: int(rt.now() * 1000))
        self.lease = Lease(rt, self.router, state=state)
        attempts = Attempts()
        self.outcomes = Outcomes(self.broker, self.record, attempts, rt.publisher, stopping=stopping)
        self.intake = Intake(
            self.broker, Admission(ALLOWED), attempts, self.outcomes, max_frames=rt.settings.max_batch_frames
        )
        self.prefetcher = Prefetcher(self.client, name=self.name, read_jobs=self.broker.read_jobs, allowed=ALLOWED)
        self.joined = False
        #: After a Redis error, whatever the in-flight hash holds is an orphan (see take).
        self.orphans = False
        #: Clear while the lane is set aside: a probe thread pings its Redis until it answers, so
        #: the loop never waits on a dead shard (redis-py's retries hold a refused connect ~0.7 s).
        self._up = threading.Event()
        self._up.set()
        self._closing = threading.Event()
        self._probe: threading.Thread | None = None

    def where(self) -> str:
        return f"worker {self.name}{' on ' + self.label if self.label else ''}"

    # -- taking -------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Not set aside after a Redis error (or its Redis answers again)."""
        return self._up.is_set()

    def take(self) -> list[Taken]:
        """One fetch from this shard's deepest queue. A Redis error sets the lane aside with backoff
        and marks the in-flight hash as holding orphans: a dequeue whose reply was lost, or (after a
        failover) a job whose settle went to the old master and was not replicated. Nothing else
        would requeue them: this worker is alive."""
        try:
            if not self.joined:
                self.join()
            if self.orphans or self.prefetcher.dequeue_failed:
                self.prefetcher.dequeue_failed = False
                self.requeue_orphans()
                self.orphans = False
            self.beat_if_due()
            self.queues.refresh()
            taken = self.broker.fetch(self.intake.jobs_to_take(), self.queues.rotated())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.set_aside(exc, log.error, "unreachable")
            return []
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self.set_aside(exc, log.warning, "refuses writes", cap=HOLD_RETRY_MAX_S)  # Redis is up: sooner
            return []
        return taken

    def set_aside(
        self, exc: redis.RedisError, say: Callable[..., None], why: str = "", cap: float = PROBE_MAX_S
    ) -> None:
        """Take no job from this lane until its Redis answers a ping (a probe thread, with backoff
        up to `cap`)."""
        self.orphans = True
        say("%s: Redis %s (%s); retrying when it answers", self.where(), why or "lost", describe(exc))
        self._up.clear()
        if self._probe is None or not self._probe.is_alive():
            self._probe = threading.Thread(target=self._wait_up, args=(cap,), name="rtai-lane-probe", daemon=True)
            self._probe.start()

    def _wait_up(self, cap: float) -> None:
        backoff = Backoff(first=0.1, cap=cap, jitter=DEQUEUE_JITTER)
        t0 = time.monotonic()
        while not self._closing.wait(backoff.next()):
            try:
                self.client.ping()
            except redis.RedisError:
                continue
            log.info("%s: Redis answers again after %.1f s", self.where(), time.monotonic() - t0)
            self._up.set()
            return

    def lost(self, exc: redis.RedisError) -> None:
        """Redis went away mid-group: the group's jobs stay in this shard's in-flight hash, and go
        back to their queues when it answers (take)."""
        log.warning("%s: Redis lost (%s) mid-group; waiting for it to resume", self.where(), describe(exc))
        self.prefetcher.close()
        self.set_aside(exc, log.debug)

    def requeue_orphans(self) -> None:
        ids = self.broker.requeue_dead(self.name, force=True)
        if ids:
            log.warning("%s: requeued %s, left in flight when Redis failed under it", self.where(), ids)

    def look(self) -> None:
        """Refresh this lane's queues when due (once a second): its depth, and its credits with each
        stream's producer, even while other lanes keep the worker busy. A lane that was never tried
        kept the depth it had when it joined, so a shard whose queue was empty then sorted last for
        ever while another kept the worker busy, and its producers, whose credits lapsed, dropped
        everything. A Redis error sets the lane aside, as in `take`."""
        if not self.joined or not self.ready():
            return
        try:
            self.queues.refresh()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.set_aside(exc, log.error, "unreachable")
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self.set_aside(exc, log.warning, "refuses writes", cap=HOLD_RETRY_MAX_S)

    def depth(self) -> int:
        """The deepest queue this lane saw at its last refresh (lanes are tried deepest first)."""
        return self.queues.depth

    # -- RQ's heartbeat -----------------------------------------------------------------------
    def beat_if_due(self) -> None:
        if self.record.beat_due():
            try:
                self.record.heartbeat()
            except redis.ResponseError as exc:  # Redis full: RQ's record waits (a second, then again)
                if not write_rejected(exc):
                    raise

    # -- birth and teardown -------------------------------------------------------------------
    def join(self) -> None:
        # A worker resuming under the same name may have left jobs in its in-flight hash that no
        # teardown could requeue: it holds nothing yet, so put whatever is there back.
        leftover = self.broker.requeue_dead(self.name, force=True)
        if leftover:
            log.warning("%s: requeued %s left from before", self.where(), leftover)
        rt = self.rt
        with self.client.pipeline() as pipe:
            pipe.sadd(keys.WORKERS, self.name)
            pipe.set(keys.worker_alive(self.name), os.getpid(), px=int(rt.settings.lease_s * 1000))
            pipe.hset(
                keys.worker(self.name),
                mapping={
                    "host": host_name(),
                    "pid": os.getpid(),
                    "device": rt.settings.device,
                    "gpu": rt.gpu,
                    "started": time.time(),
                    "state": WorkerState.IDLE.value,
                },
            )
            pipe.expire(keys.worker(self.name), WORKER_TTL_S)
            for variant, names in rt.loaded_names().items():  # what the tracker and subscribers label boxes with
                pipe.set(keys.model_names(variant), packb(names))
            pipe.execute()
        self.queues.refresh(force=True)
        self.record.birth(self.queues.keys)
        self.lease.start()
        self.joined = True
        self.orphans = False

    def teardown(self) -> None:
        # A prefetch still running ends before the in-flight jobs go back (what it took is in the
        # in-flight hash, and goes back with the rest).
        try:
            self.prefetcher.close()
        except redis.RedisError as exc:
            log.warning("%s: prefetch ended with %s", self.where(), describe(exc))
        self._closing.set()
        self.lease.stop()
        if not self.joined:
            return
        try:
            leftover = self.broker.requeue_dead(self.name, force=True)
            if leftover:
                log.warning("%s: requeued %s on the way out", self.where(), leftover)
            self.router.release()
            with self.client.pipeline() as pipe:
                pipe.delete(keys.worker_alive(self.name))
                pipe.hset(
                    keys.worker(self.name),
                    mapping={"state": WorkerState.STOPPED.value, **self.rt.inference_counts()},
                )
                self.queues.leave(pipe)
                pipe.execute()
            self.record.death()
        except redis.RedisError as exc:
            log.warning("%s: could not clean up: %s", self.where(), describe(exc))
