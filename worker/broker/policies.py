"""The worker's policies, each a small object called at one named point of the job path (as
dramatiq's middleware: age_limit, retries): admission when a job is read, stale frames when a
batch runs, attempts when a job fails or was held by a worker that died, prefetch when a detector
call reaches a stage."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import redis

from common import keys
from common.errors import JobRejectedError, ModelError, SchemaError
from common.wire import Frame, JobArgs

from .. import admission

#: A batch that fails this many times for a reason other than bad input is a poison batch.
MAX_ATTEMPTS = 3
#: How long a batch's failure counter is kept.
ATTEMPTS_TTL_S = 3600
#: A batch failed because its model cannot load is kept this long in the failed registry (one per
#: batch of a broken stream: a day of them would pile up).
MODEL_FAILURE_TTL_S = 300


@dataclass(frozen=True)
class Admission:
    """At read: a job runs only if its raw hash holds what a producer writes (worker/admission.py)."""

    allowed: Collection[str]

    def check(self, fields: dict[bytes, bytes], queue_key: str) -> JobArgs:
        """The job's arguments; JobRejectedError with the reason otherwise."""
        return admission.check(fields, queue_key=queue_key, allowed=self.allowed)


@dataclass(frozen=True)
class StaleFrames:
    """At run: frames older than `max_age_s` (capture to the start of the run, Redis time) are
    counted dropped_stale, never detected."""

    max_age_s: float

    def split(self, frames: list[Frame], t_start: float) -> tuple[list[Frame], int]:
        live = [f for f in frames if t_start - f.t_capture <= self.max_age_s]
        return live, len(frames) - len(live)


@dataclass(frozen=True)
class Verdict:
    """What becomes of a job that failed: `retry` it, or `fail` it (kept `ttl` seconds in the failed
    registry); `poison`: its frames are still to be counted failed."""

    action: str  # retry | fail
    ttl: int | None = None
    poison: bool = False
    attempts: int = 0


@dataclass(frozen=True)
class Attempts:
    """At failure, and at admission for jobs whose worker died holding them (their kill count)."""

    max_attempts: int = MAX_ATTEMPTS

    def killed_too_often(self, kills: int) -> bool:
        return kills >= self.max_attempts

    def on_failure(self, client: redis.Redis, args: JobArgs, exc: BaseException) -> Verdict:
        """Bad input fails at once (the job counted its frames failed), a model that cannot load
        too (every batch of the stream would fail the same way); anything else is retried until it
        has failed `max_attempts` times, then it is a poison batch."""
        if isinstance(exc, ModelError):
            return Verdict("fail", ttl=MODEL_FAILURE_TTL_S)
        if isinstance(exc, SchemaError | JobRejectedError):
            return Verdict("fail")
        with client.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.attempts(args.stream), str(args.batch), 1)
            pipe.expire(keys.attempts(args.stream), ATTEMPTS_TTL_S)
            attempts, _ = pipe.execute()
        if int(attempts) < self.max_attempts:
            return Verdict("retry", attempts=int(attempts))
        return Verdict("fail", poison=True, attempts=int(attempts))


@dataclass(frozen=True)
class Prefetch:
    """At a stage of a detector call ("detect", "settle"): whether to start taking the next group.
    Never while stopping, beside a job that killed a worker before (it runs alone), or with one
    pending."""

    stage: str  # detect | settle | off

    def starts_at(self, stage: str, *, stopping: bool, suspect: bool, pending: bool, queues: bool) -> bool:
        return stage == self.stage and queues and not (stopping or suspect or pending)
