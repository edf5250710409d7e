"""The fleet's worker loop: take a group of jobs, run it in one detector call, write its records.

- The broker (worker/broker/) moves jobs: a fetch takes up to the frame limit in jobs from the
  deepest queues into this worker's in-flight hash in one step, so no kill loses a job; the lease
  thread (worker/lease.py) requeues the in-flight jobs of workers whose lease ran out.
- Jobs are admitted from their raw hash (policies.Admission) before anything is restored or run;
  a job whose worker died holding it too often is a poison batch (policies.Attempts).
- The group is passed to the job code (worker/jobs.run_group) and comes back with each job's
  outcome; RQ's records follow (rq_compat), one pipeline when the group starts, one when it ends.
- With several Redis shards (common/shards.py) the worker has a lane on each (worker/lane.py):
  lanes are tried deepest queue first (as of their last refresh, once a second), equally deep ones
  in turn, and a lane whose Redis fails is set aside while the others keep working.
- First SIGTERM/SIGINT: finish the group in hand, then stop; a second: stop now, the jobs in hand
  go back to the front of their queues.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Sequence
from types import FrameType

import redis

from common.proctitle import set_title
from common.redis_client import write_rejected
from common.states import WorkerState

from .broker import Prefetch, Taken
from .group import Group
from .jobs import run_group
from .lane import Lane
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Idle polling starts fast (a new batch is picked up within ~2 ms) and backs off to 20 ms.
POLL_MIN_S = 0.002
POLL_MAX_S = 0.02


class ForceStop(BaseException):
    """A second SIGTERM/SIGINT: stop now (raised from the signal handler)."""


class WorkerLoop:
    def __init__(self, runtime: Runtime | Sequence[Runtime], labels: Sequence[str] = ()) -> None:
        """One runtime per shard (the first is the home shard's); `labels` name them in logs."""
        runtimes = [runtime] if isinstance(runtime, Runtime) else list(runtime)
        self.rt = runtimes[0]
        self.name = self.rt.name
        self.lanes = [
            Lane(
                rt,
                label=labels[i] if i < len(labels) else "",
                state=lambda: self.state,
                stopping=lambda: self.force,
            )
            for i, rt in enumerate(runtimes)
        ]
        self.prefetch = Prefetch(self.rt.settings.prefetch_stage)
        self.state = WorkerState.STARTING
        self.stop_requested = False
        self.force = False
        self.jobs_done = 0
        self._turn = 0
        #: The lane whose prefetcher may hold the next group.
        self._prefetched: Lane | None = None

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, burst: bool = False, max_jobs: int | None = None) -> None:
        """Work until asked to stop (or, `burst`, until the queues are empty)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.bootstrap()
        try:
            while not self.stop_requested:
                got = self._next_group(burst)
                if got is None:
                    break
                lane, group = got
                try:
                    self._run(lane, group)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    lane.lost(exc)
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

    # -- taking a group -----------------------------------------------------------------------
    def _ordered(self) -> list[Lane]:
        """The lanes to try, deepest queue first (as each lane last looked, once a second, whether it
        was tried or not); equally deep ones in turn."""
        if len(self.lanes) == 1:
            return self.lanes
        for lane in self.lanes:
            lane.look()
        k = self._turn % len(self.lanes)
        self._turn += 1
        turned = self.lanes[k:] + self.lanes[:k]
        return sorted(turned, key=lambda lane: -lane.depth())

    def _next_group(self, burst: bool) -> tuple[Lane, Group] | None:
        lane, self._prefetched = self._prefetched, None
        got = lane.prefetcher.take() if lane is not None else None
        if lane is not None and got is not None:
            self.state = WorkerState.BUSY
            try:
                lane.beat_if_due()
                lane.queues.refresh()
                lane.rt.fault("after_dequeue")
                group = lane.intake.admit([Taken(q, i) for q, i in got.taken], got.reads)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                lane.lost(exc)
                group = None
            if group is not None:
                group.ready = got.ready
                return lane, group
        self.state = WorkerState.IDLE
        set_title(f"rtai-worker:{self._label()} idle")
        pause = POLL_MIN_S
        while not self.stop_requested:
            tried = False
            for lane in self._ordered():
                if not lane.ready():
                    continue
                tried = True
                taken = lane.take()
                if not taken:
                    continue
                self.state = WorkerState.BUSY  # from here a first SIGTERM lets it finish the group
                lane.rt.fault("after_dequeue")
                try:
                    group = lane.intake.admit(taken, None)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    lane.lost(exc)
                    group = None
                if group is not None:
                    return lane, group
                self.state, pause = WorkerState.IDLE, POLL_MIN_S
                break
            else:
                if burst and tried and all(lane.ready() for lane in self.lanes):
                    return None
                time.sleep(pause if tried else POLL_MAX_S)  # untried: every lane is set aside
                pause = min(pause * 2, POLL_MAX_S)
        return None

    # -- running a group ----------------------------------------------------------------------
    def _run(self, lane: Lane, group: Group) -> None:
        set_title(f"rtai-worker:{self._label()} running {len(group.jobs)} job(s) of {group.jobs[0].job.origin}")
        try:
            unread = group.unread
            with lane.client.pipeline() as pipe:
                for gj in group.jobs:
                    gj.execution = lane.record.record_start(pipe, gj.job)
                lane.record.started(pipe, lane.record.rq.get_heartbeat_ttl(group.jobs[0].job))
                if unread:  # the blobs come back in the same round trip
                    pipe.mget(unread)
                replies = pipe.execute()
            if unread:
                group.stored = dict(zip(unread, replies[-1], strict=True))
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            lane.outcomes.hold(group, exc)  # Redis full: nothing ran; back to the front
            return
        group.on_stage = self._prefetch_hook(lane, group)
        try:
            run_group(lane.rt, group)
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            lane.outcomes.hold(group, exc)  # a batch that did settle is a duplicate when it runs again
            return
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - the job boundary: an error of the job code is its jobs' failure
            group.outcomes = {gj.id: exc for gj in group.jobs}
        lane.outcomes.write(group)

    def _prefetch_hook(self, lane: Lane, group: Group):
        def at(stage: str) -> None:
            # The next group is prefetched from the lane that would be tried first, not always from
            # this one: a shard that keeps the worker busy never shuts the others out.
            target = next((other for other in self._ordered() if other.ready() and other.joined), lane)
            if not self.prefetch.starts_at(
                stage,
                stopping=self.stop_requested or self.force,
                suspect=group.suspect,
                pending=target.prefetcher.pending,
                queues=bool(target.queues.keys),
            ):
                return
            take, queue_keys, peers = target.intake.jobs_to_take(), target.queues.rotated(), list(target.queues.peers)
            target.prefetcher.start(
                lambda: [(t.queue_key, t.job_id) for t in target.broker.fetch(take, queue_keys, peers)]
            )
            self._prefetched = target

        return at

    # -- birth and teardown -------------------------------------------------------------------
    def _label(self) -> str:
        return "cpu" if self.rt.gpu == "cpu" else f"gpu{self.rt.gpu}"

    def bootstrap(self) -> None:
        """Join every shard. With one Redis a failure raises (worker/process.py retries); with
        several, a shard that does not answer is set aside and joined when it does, unless none does."""
        if len(self.lanes) == 1:
            self.lanes[0].join()
            return
        failed: redis.RedisError | None = None
        for lane in self.lanes:
            try:
                lane.join()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                lane.set_aside(exc, log.error, "unreachable at start")
                failed = exc
        if failed is not None and not any(lane.joined for lane in self.lanes):
            raise failed

    def teardown(self) -> None:
        for lane in self.lanes:
            lane.teardown()
