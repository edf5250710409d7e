"""What becomes of each job of a group once it ran: RQ's records of those that returned, the
attempts policy for those that failed (retried at the back of their queue, or failed: poison, bad
input, a model that cannot load), the front of their queue for those that did not run, and the
whole group held while Redis refuses writes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from rq.executions import Execution
from rq.job import Job

from common import keys, ledger
from common.errors import RtaiError
from common.redis_client import describe, write_rejected

from .broker import Attempts, RedisBroker, Taken, rq_compat
from .group import Group, GroupJob
from .publisher import Publisher, Settlement

log = logging.getLogger(__name__)


class Outcomes:
    def __init__(
        self,
        broker: RedisBroker,
        record: rq_compat.WorkerRecord,
        attempts: Attempts,
        publisher: Publisher,
        *,
        stopping: Callable[[], bool],
    ) -> None:
        self.client = broker.client
        self.name = broker.name
        self.broker = broker
        self.record = record
        self.attempts = attempts
        self.publisher = publisher
        #: The worker is stopping now: a give-back that Redis refuses is left to teardown.
        self.stopping = stopping
        #: Causes of failed jobs already logged (each once, in words).
        self._said: set[str] = set()

    def write(self, group: Group) -> bool:
        """Each job's end: RQ's records of those that returned, with the latencies, the worker idle
        and out of flight, in one MULTI (a kill before it leaves them in flight: requeued, and a
        settled batch reruns as a duplicate); failures by the attempts policy; jobs that did not run
        back at the front. False when Redis refused the records (the group is held instead)."""
        finished = [(gj, o) for gj in group.jobs if isinstance(o := group.outcomes.get(gj.id), dict)]
        try:
            with self.client.pipeline() as pipe:
                by_stream: dict[str, list[float]] = {}
                for stream, latencies_ms in group.latencies:  # one histogram write a stream, not a job
                    by_stream.setdefault(stream, []).extend(latencies_ms)
                for stream, latencies_ms in by_stream.items():
                    ledger.record_latencies(pipe, stream, latencies_ms)
                working_s = 0.0
                for gj, result in finished:
                    working_s += self.record.record_success(pipe, gj.job, gj.taken.queue_key, result, gj.execution)
                    pipe.hdel(self.broker.inflight, gj.id)
                self.record.ended(pipe, len(finished), working_s)
                pipe.execute()
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self.hold(group, exc)  # settled or not: a rerun of a settled batch is a duplicate
            return False
        for gj in group.jobs:
            outcome = group.outcomes.get(gj.id)
            if outcome is None:
                self.broker.give_back(gj.taken, gj.members, stop=self.stopping)
            elif isinstance(outcome, BaseException):
                self.failed(gj, outcome)
        return True

    def failed(self, gj: GroupJob, exc: BaseException) -> None:
        self.say(gj, exc)
        verdict = self.attempts.on_failure(self.client, gj.args, exc)
        message = f"{type(exc).__name__}: {exc}"
        a = gj.args
        if verdict.action == "retry":
            log.warning(
                "worker %s: job %s (%s#%s) failed (attempt %d of %d), retrying: %s",
                self.name,
                gj.id,
                a.stream,
                a.batch,
                verdict.attempts,
                self.attempts.max_attempts,
                message,
            )
            self.broker.retry(gj.taken, gj.members, stop=self.stopping)
            return
        if verdict.poison:
            self.publisher.settle(Settlement(a.stream, a.batch, failed=a.n))
            message = f"poison batch: failed {verdict.attempts} times; last error: {message}"
            log.error("worker %s: job %s (%s#%s) %s", self.name, gj.id, a.stream, a.batch, message)
        self.fail(gj.taken, gj.job, message, gj.execution, ttl=verdict.ttl)

    def say(self, gj: GroupJob, exc: BaseException) -> None:
        """The project's own errors say what is wrong in words: one line per cause (a missing model
        fails every batch the same way); anything else with its traceback."""
        if not isinstance(exc, RtaiError):
            log.error("job %s of %s failed", gj.id, gj.job.origin, exc_info=exc)
            return
        cause = f"{type(exc).__name__}: {exc}"
        if cause not in self._said:
            self._said.add(cause)
            log.error("job of %s failed: %s", gj.job.origin, cause)

    def hold(self, group: Group, exc: redis.ResponseError) -> None:
        """Redis refused a write (full, read-only): every job of the group back to the front of
        its queue, retried until Redis takes it; the worker lives on."""
        log.warning(
            "worker %s: %s while running %d job(s); holding them until they are back",
            self.name,
            describe(exc),
            len(group.jobs),
        )
        for gj in reversed(group.jobs):
            self.broker.give_back(gj.taken, gj.members, stop=self.stopping)

    def fail(
        self, t: Taken, job: Job, message: str, execution: Execution | None = None, *, ttl: int | None = None
    ) -> None:
        """RQ's records of a failed job, and the job out of flight, in one MULTI."""
        with self.client.pipeline() as pipe:
            self.record.record_failure(pipe, job, t.queue_key, message, execution, ttl=ttl or rq_compat.FAILURE_TTL_S)
            pipe.hdel(self.broker.inflight, t.job_id)
            pipe.execute()

    def reject(self, t: Taken, job: Job, reason: str) -> None:
        self.count_rejected(f"job {job.id}: {reason}")
        self.fail(t, job, f"refused by {self.name}: {reason}")

    def count_rejected(self, message: str) -> None:
        log.error("worker %s refused %s", self.name, message)
        with self.client.pipeline() as pipe:
            pipe.hincrby(keys.FLEET, "rejected_jobs", 1)
            pipe.hincrby(keys.worker(self.name), "rejected", 1)
            pipe.hset(keys.worker(self.name), "last_error", message[:500])
            pipe.execute()
