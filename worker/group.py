"""A group: the jobs one dequeue took that run in one detector call, passed explicitly to the job
code (worker/jobs.run_group) and back: nothing travels through module state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.wire import JobArgs

from .broker import Taken

if TYPE_CHECKING:
    from rq.executions import Execution
    from rq.job import Job

    from .prefetch import Prepared

#: What running one job came to: its result, or the error that ended it.
Outcome = dict[str, Any] | BaseException


@dataclass
class GroupJob:
    """One admitted job: where it was taken from, its RQ job, its arguments and its kill count."""

    taken: Taken
    job: Job
    args: JobArgs
    kills: int = 0
    #: RQ's execution of this run (rq_compat.record_start), None until it is recorded.
    execution: Execution | None = None

    @property
    def id(self) -> str:
        return self.taken.job_id

    @property
    def members(self) -> list[str]:
        """Its entry in RQ's started registry, for a give-back to remove."""
        return [self.execution.composite_key] if self.execution is not None else []


@dataclass
class Group:
    """In: the jobs, the batches a prefetch has ready (by blob key), the other blobs as read, a hook
    called at each stage of the detector call. Out: each job's outcome, and the latencies of the frames settled."""

    jobs: list[GroupJob]
    ready: dict[str, Prepared] = field(default_factory=dict)
    #: Blobs read with the group's start records (by blob key; None: gone), in the same round trip.
    stored: dict[str, bytes | None] = field(default_factory=dict)
    on_stage: Callable[[str], None] | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    latencies: list[tuple[str, list[float]]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(j.args.n for j in self.jobs)

    @property
    def unread(self) -> list[str]:
        """Blob keys of the jobs a prefetch has not got ready."""
        return [j.args.blob for j in self.jobs if j.args.blob not in self.ready]

    @property
    def suspect(self) -> bool:
        """It holds a job that killed a worker before (such a job runs alone)."""
        return any(j.kills for j in self.jobs)

    def stage(self, name: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name)
