"""The fleet's worker loop: take a group of jobs, run it in one detector call, write its records.

- The broker (worker/broker/) moves jobs: a fetch takes up to the frame limit in jobs from the
  deepest queues into this worker's in-flight hash in one step, so no kill loses a job; the lease
  thread (worker/lease.py) requeues the in-flight jobs of workers whose lease ran out.
- Jobs are admitted from their raw hash (policies.Admission) before anything is restored or run;
  a job whose worker died holding it too often is a poison batch (policies.Attempts).
- The group is passed to the job code (worker/jobs.run_group) and comes back with each job's
  outcome; RQ's records follow (rq_compat), one pipeline when the group starts, one when it ends.
- First SIGTERM/SIGINT: finish the group in hand, then stop; a second: stop now, the jobs in hand
  go back to the front of their queues.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

import redis

from common import keys
from common.backoff import Backoff
from common.config import host_name
from common.proctitle import set_title
from common.redis_client import describe, wait_until_up, write_rejected
from common.states import WorkerState

from .broker import Admission, Attempts, Prefetch, RedisBroker, Taken, rq_compat
from .group import Group
from .intake import Intake
from .jobs import ALLOWED, run_group
from .lease import WORKER_TTL_S, Lease
from .outcomes import Outcomes
from .prefetch import Prefetcher
from .queues import Queues
from .routing import Router
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Idle polling starts fast (a new batch is picked up within ~2 ms) and backs off to 20 ms.
POLL_MIN_S = 0.002
POLL_MAX_S = 0.02
#: Dequeue retry delays are shortened by up to this fraction: workers that lost Redis together spread out.
DEQUEUE_JITTER = 0.25
#: While Redis refuses writes (full), a dequeue is retried at most this far apart.
HOLD_RETRY_MAX_S = 0.5
#: RQ's heartbeat of the worker record, at most this often while idle.
RQ_BEAT_S = 1.0


class ForceStop(BaseException):
    """A second SIGTERM/SIGINT: stop now (raised from the signal handler)."""


class WorkerLoop:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.client = runtime.client
        self.name = runtime.name
        s = runtime.settings
        self.broker = RedisBroker(self.client, self.name)
        self.record = rq_compat.WorkerRecord(self.client, self.name)
        self.router = Router(self.client, name=self.name, gpu=runtime.gpu)
        self.queues = Queues(self.client, self.router, self.record, lambda: int(runtime.now() * 1000))
        self.lease = Lease(runtime, self.router, state=lambda: self.state)
        attempts = Attempts()
        self.outcomes = Outcomes(self.broker, self.record, attempts, runtime.publisher, stopping=lambda: self.force)
        self.intake = Intake(self.broker, Admission(ALLOWED), attempts, self.outcomes, max_frames=s.max_batch_frames)
        self.prefetch = Prefetch(s.prefetch_stage)
        self.prefetcher = Prefetcher(self.client, name=self.name, read_jobs=self.broker.read_jobs, allowed=ALLOWED)
        self.state = WorkerState.STARTING
        self.stop_requested = False
        self.force = False
        self.jobs_done = 0
        self._beat_at = 0.0

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, burst: bool = False, max_jobs: int | None = None) -> None:
        """Work until asked to stop (or, `burst`, until the queues are empty)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.bootstrap()
        try:
            while not self.stop_requested:
                try:
                    group = self._next_group(burst)
                    if group is None:
                        break
                    self._run(group)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._resume_after(exc)
                    continue
                self.jobs_done += len(group.jobs)
                if max_jobs and self.jobs_done >= max_jobs:
                    break
        except ForceStop:
            log.warning("worker %s: stopped now; the jobs in hand go back to their queues", self.name)
        finally:
            self.teardown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested:
            self.force = True
            raise ForceStop
        self.stop_requested = True
        if self.state == WorkerState.BUSY:
            log.warning("worker %s: stopping after the jobs in hand (again to stop now)", self.name)

    def _resume_after(self, exc: redis.RedisError) -> None:
        """Redis went away mid-step: wait for it, then put back whatever this worker held (its
        in-flight hash, a prefetch's group included) and take jobs again."""
        log.warning("worker %s: Redis lost (%s); waiting for it to resume", self.name, describe(exc))
        self.prefetcher.close()
        wait_until_up(self.client, what=f"worker {self.name}", stop=lambda: self.stop_requested)
        if self.stop_requested:
            return
        self._requeue_orphans()

    def _requeue_orphans(self) -> None:
        ids = self.broker.requeue_dead(self.name, force=True)
        if ids:
            log.warning("worker %s: requeued %s, left in flight when Redis failed under it", self.name, ids)

    # -- taking a group -----------------------------------------------------------------------
    def _next_group(self, burst: bool) -> Group | None:
        got = self.prefetcher.take()
        if got is not None:
            self.state = WorkerState.BUSY
            self._beat_if_due()
            self.queues.refresh()
            self.rt.fault("after_dequeue")
            group = self.intake.admit([Taken(q, i) for q, i in got.taken], got.reads)
            if group is not None:
                group.ready = got.ready
                return group
        self.state = WorkerState.IDLE
        set_title(f"rtai-worker:{self._label()} idle")
        pause, backoff = POLL_MIN_S, Backoff(first=0.1, cap=5.0, jitter=DEQUEUE_JITTER)
        # Idle, this worker holds nothing; after a Redis error, whatever its in-flight hash holds is
        # an orphan: a dequeue whose reply was lost, or (after a failover) a job whose settle went to
        # the old master and was not replicated. Nothing else would requeue it: the worker is alive.
        orphans = self.prefetcher.dequeue_failed
        self.prefetcher.dequeue_failed = False
        while not self.stop_requested:
            try:
                if orphans:
                    self._requeue_orphans()
                    orphans = False
                self._beat_if_due()
                self.queues.refresh()
                taken = self.broker.fetch(self.intake.jobs_to_take(), self.queues.rotated())
                backoff.reset()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                orphans = True
                delay = backoff.next()
                log.error("worker %s: Redis unreachable (%s); retrying in %.1f s", self.name, exc, delay)
                time.sleep(delay)
                continue
            except redis.ResponseError as exc:
                if not write_rejected(exc):
                    raise
                orphans = True
                delay = min(backoff.next(), HOLD_RETRY_MAX_S)  # Redis is up: retry sooner
                log.warning("worker %s: %s; retrying in %.1f s", self.name, describe(exc), delay)
                time.sleep(delay)
                continue
            if taken:
                self.state = WorkerState.BUSY  # from here a first SIGTERM lets it finish the group
                self.rt.fault("after_dequeue")
                group = self.intake.admit(taken, None)
                if group is not None:
                    return group
                self.state, pause = WorkerState.IDLE, POLL_MIN_S
                continue
            if burst:
                return None
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)
        return None

    # -- running a group ----------------------------------------------------------------------
    def _run(self, group: Group) -> None:
        set_title(f"rtai-worker:{self._label()} running {len(group.jobs)} job(s) of {group.jobs[0].job.origin}")
        try:
            unread = group.unread
            with self.client.pipeline() as pipe:
                for gj in group.jobs:
                    gj.execution = self.record.record_start(pipe, gj.job)
                self.record.started(pipe, self.record.rq.get_heartbeat_ttl(group.jobs[0].job))
                if unread:  # the blobs come back in the same round trip
                    pipe.mget(unread)
                replies = pipe.execute()
            if unread:
                group.stored = dict(zip(unread, replies[-1], strict=True))
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self.outcomes.hold(group, exc)  # Redis full: nothing ran; back to the front
            return
        group.on_stage = self._prefetch_hook(group)
        try:
            run_group(self.rt, group)
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self.outcomes.hold(group, exc)  # a batch that did settle is a duplicate when it runs again
            return
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - the job boundary: an error of the job code is its jobs' failure
            group.outcomes = {gj.id: exc for gj in group.jobs}
        if self.outcomes.write(group):
            self._beat_at = time.monotonic()  # the records carried RQ's heartbeat

    def _prefetch_hook(self, group: Group):
        def at(stage: str) -> None:
            if not self.prefetch.starts_at(
                stage,
                stopping=self.stop_requested or self.force,
                suspect=group.suspect,
                pending=self.prefetcher.pending,
                queues=bool(self.queues.keys),
            ):
                return
            take, queue_keys, peers = self.intake.jobs_to_take(), self.queues.rotated(), list(self.queues.peers)
            self.prefetcher.start(lambda: [(t.queue_key, t.job_id) for t in self.broker.fetch(take, queue_keys, peers)])

        return at

    # -- birth and teardown -------------------------------------------------------------------
    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if now - self._beat_at >= RQ_BEAT_S:
            try:
                self.record.heartbeat()
            except redis.ResponseError as exc:  # Redis full: RQ's record waits
                if not write_rejected(exc):
                    raise
            self._beat_at = now

    def _label(self) -> str:
        return "cpu" if self.rt.gpu == "cpu" else f"gpu{self.rt.gpu}"

    def bootstrap(self) -> None:
        # A worker resuming under the same name may have left jobs in its in-flight hash that no
        # teardown could requeue: it holds nothing yet, so put whatever is there back.
        leftover = self.broker.requeue_dead(self.name, force=True)
        if leftover:
            log.warning("worker %s: requeued %s left from before", self.name, leftover)
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
            pipe.execute()
        self.queues.refresh(force=True)
        self.record.birth(self.queues.keys)
        self.lease.start()

    def teardown(self) -> None:
        # A prefetch still running ends before the in-flight jobs go back (what it took is in the
        # in-flight hash, and goes back with the rest).
        try:
            self.prefetcher.close()
        except redis.RedisError as exc:
            log.warning("worker %s: prefetch ended with %s", self.name, describe(exc))
        self.lease.stop()
        try:
            leftover = self.broker.requeue_dead(self.name, force=True)
            if leftover:
                log.warning("worker %s: requeued %s on the way out", self.name, leftover)
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
            log.warning("worker %s: could not clean up: %s", self.name, describe(exc))
