"""Admitting what one fetch took: each job restored from its raw hash only if admission passes
(forged or unreadable jobs are refused, counted and failed), poison batches failed, and the group
formed up to the frame limit (dynamic batching)."""

from __future__ import annotations

import logging

import redis
from rq.exceptions import NoSuchJobError, TimeoutFormatError
from rq.job import Job

from common import keys
from common.errors import JobRejectedError
from common.wire import MsgpackSerializer

from .broker import Admission, Attempts, RedisBroker, Taken
from .group import Group, GroupJob
from .outcomes import Outcomes
from .publisher import Settlement

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self, broker: RedisBroker, admission: Admission, attempts: Attempts, outcomes: Outcomes, *, max_frames: int
    ) -> None:
        self.client = broker.client
        self.name = broker.name
        self.broker = broker
        self.admission = admission
        self.attempts = attempts
        self.outcomes = outcomes
        self.max_frames = max_frames
        #: Frames a job had last: a fetch takes the frame limit over it in jobs (at first 1 a job).
        self.job_frames = 1

    def jobs_to_take(self) -> int:
        return max(1, self.max_frames // max(1, self.job_frames))

    def admit(self, taken: list[Taken], reads: list[tuple[object, object]] | None) -> Group | None:
        """The group to run from what one fetch took: the first admitted job, and the next ones up
        to the frame limit (dynamic batching). A job that killed a worker before runs alone (it may
        be a poison batch); jobs over the limit or beside such a job go back to the front."""
        if reads is None:
            reads = self.broker.read_jobs([t.job_id for t in taken])
        jobs: list[GroupJob] = []
        back: list[GroupJob] = []
        frames, limit = 0, self.max_frames
        for t, (fields, kills) in zip(taken, reads, strict=True):
            gj = self.admit_one(t, fields, kills)
            if gj is None:
                continue
            if not jobs:
                jobs, frames, self.job_frames = [gj], gj.args.n, gj.args.n
            elif jobs[0].kills or gj.kills or frames + gj.args.n > limit:
                back.append(gj)
            else:
                jobs.append(gj)
                frames += gj.args.n
        for gj in reversed(back):
            self.broker.give_back(gj.taken, stop=self.outcomes.stopping)
        return Group(jobs) if jobs else None

    def admit_one(self, t: Taken, fields: object, kills: object) -> GroupJob | None:
        """The job restored from the hash that passed admission, with its kill count; None when
        there is none to run: gone, refused (counted, reason in the failed registry) or poison."""
        job = Job(t.job_id, connection=self.client, serializer=MsgpackSerializer)
        for reply in (fields, kills):
            if isinstance(reply, redis.ResponseError):  # not a hash (a string): nothing RQ could run either
                self.outcomes.count_rejected(f"job {t.job_id}: unreadable ({reply})")
                self.broker.forget(t.job_id)
                return None
            if isinstance(reply, BaseException):
                raise reply
        if not isinstance(fields, dict) or not fields:
            self.broker.forget(t.job_id)
            return None
        try:
            args = self.admission.check(fields, t.queue_key)
            job.restore(fields)
        except JobRejectedError as exc:
            self.outcomes.reject(t, job, str(exc))
            return None
        except (ValueError, TypeError, KeyError, NoSuchJobError, TimeoutFormatError) as exc:
            self.outcomes.reject(t, job, f"job hash does not restore: {exc}")
            return None
        gj = GroupJob(t, job, args, int(kills) if isinstance(kills, bytes | str | int) else 0)
        if self.attempts.killed_too_often(gj.kills):
            settled = self.outcomes.publisher.settle(Settlement(args.stream, args.batch, failed=args.n))
            message = f"poison batch {args.stream}#{args.batch}: killed its worker {gj.kills} times"
            if settled:
                message += f"; its {args.n} frames are counted failed"
            log.error("worker %s: job %s %s", self.name, job.id, message)
            self.outcomes.fail(t, job, message)
            self.client.delete(keys.kills(job.id))
            return None
        return gj
