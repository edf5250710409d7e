"""Prefetch: while one group of jobs is being detected and settled, a thread takes the next group
and gets it ready, so the next detector call does not wait on Redis or on the JPEG decoder.

What the thread does, all of it reads except the dequeue:
- the dequeue script takes the next group into this worker's in-flight hash (the same step as the
  worker's own dequeue: a kill from then on requeues it) — but only while no other live worker
  that serves these queues is idle, so a prefetch never holds a batch an idle peer could run now;
- each job's hash and kill count are read (admission.check, which has no side effect, names the
  batch key of each); the batches are fetched in one MGET, unpacked and their frames decoded.

The worker's main thread then admits the group as it would a fresh dequeue (admission, poison and
kill checks are unchanged) and jobs.run_group uses what is ready instead of fetching and decoding
again. What a prefetched job costs: it waits for the group in hand to settle, so its frames are
that much older when they run (which is why the prefetch starts when detection ends, not when it
starts; see `WorkerSettings.prefetch`), and a worker killed in that time counts a death against it
as against the jobs it was running. The worker prefetches nothing while it runs a job that killed a
worker before, so a poison batch's later runs never take innocent jobs down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import redis

from common.errors import FrameDecodeError, JobRejectedError, SchemaError
from common.wire import Batch, decode_batch

from . import admission
from .decode import decode_frames

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One batch fetched, unpacked and decoded ahead of its run: images by frame seq."""

    batch: Batch
    images: dict[int, np.ndarray | FrameDecodeError]


@dataclass
class Prefetched:
    """What one prefetch took and got ready."""

    #: (queue key, job id) as the dequeue script took them: in this worker's in-flight hash.
    taken: list[tuple[str, str]]
    #: Each job's raw hash and kill count (as RedisBroker.read_jobs reads them), or None.
    reads: list[tuple[object, object]] | None = None
    #: Batch key -> the batch ready to run (a missing or unreadable one is fetched again).
    ready: dict[str, Prepared] = field(default_factory=dict)


def prepare(data: bytes) -> Prepared | None:
    """A stored batch unpacked and decoded; None when it does not unpack (the run says why)."""
    try:
        b = decode_batch(data)
    except SchemaError:
        return None
    return Prepared(b, {f.seq: image for f, image in zip(b.frames, decode_frames(b.frames), strict=True)})


class Prefetcher:
    """One background thread; at most one prefetch pending at a time."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        read_jobs: Callable[[list[str]], list[tuple[object, object]]],
        allowed: Collection[str],
    ) -> None:
        self.client = client
        self.name = name
        self._read_jobs = read_jobs
        self._allowed = allowed
        self._pool: ThreadPoolExecutor | None = None
        #: A prefetch's dequeue raised a Redis error: what it took may sit in the in-flight hash.
        self.dequeue_failed = False
        self._pending: Future[Prefetched | None] | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def start(self, dequeue: Callable[[], list[tuple[str, str]]]) -> None:
        """Begin the next group's prefetch in the background (no-op when one is pending); `dequeue`
        runs the dequeue script and returns what it took."""
        if self._pending is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rtai-prefetch")
        self._pending = self._pool.submit(self._run, dequeue)

    def take(self) -> Prefetched | None:
        """Wait for the pending prefetch; what it took (None: none pending, or it took nothing)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        return pending.result()

    def close(self) -> Prefetched | None:
        """Wait for the thread and stop it; returns what a pending prefetch took (still in flight)."""
        got = self.take()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return got

    def _run(self, dequeue: Callable[[], list[tuple[str, str]]]) -> Prefetched | None:
        try:
            taken = dequeue()
        except redis.RedisError as exc:
            log.debug("worker %s: prefetch dequeue failed: %s", self.name, exc)
            self.dequeue_failed = True  # the script may have run and its reply been lost: see WorkerLoop
            return None
        if not taken:
            return None
        out = Prefetched(taken)
        try:
            out.reads = self._read_jobs([job_id for _queue, job_id in taken])
            blob_keys: list[str] = []
            for (queue_key, _job_id), (fields, _kills) in zip(taken, out.reads, strict=True):
                if not isinstance(fields, dict) or not fields:
                    continue
                try:
                    blob_keys.append(admission.check(fields, queue_key=queue_key, allowed=self._allowed).blob)
                except (JobRejectedError, ValueError, TypeError, KeyError):
                    continue  # the main thread refuses it, with the reason
            if not blob_keys:
                return out
            blobs = self.client.mget(blob_keys)
        except redis.RedisError as exc:  # the group is in flight: the main thread fetches it itself
            log.debug("worker %s: prefetch read failed: %s", self.name, exc)
            return out
        for key, data in zip(blob_keys, blobs, strict=True):
            if isinstance(data, bytes):
                prepared = prepare(data)
                if prepared is not None:
                    out.ready[key] = prepared
        return out
