"""The fleet's RQ worker: in-process jobs, deepest-queue-first, no job lost between dequeue and done.

Differences from RQ's SimpleWorker:
- Before each dequeue it refreshes its queues from the registered streams, and one Lua script
  pops from the deepest eligible queue and records the job in this worker's in-flight hash in the
  same step, so there is no moment in which a kill loses a job.
- A lease thread (worker/lease.py) renews `rtai:worker:<name>:alive` every heartbeat and requeues
  the in-flight jobs of any worker whose lease ran out (a lost host, a SIGKILLed or SIGSTOPped process).
- Jobs are admitted from their raw hash (worker/admission.py) before RQ restores or runs them: a
  function outside worker.jobs.ALLOWED, callbacks, dependencies, retries, webhooks or kwargs off the
  JobArgs contract are refused without being imported.
- A job whose worker died holding it MAX_ATTEMPTS times (killed, crashed, lease lost) is a poison
  batch: its frames are counted failed and the job goes to the failed registry.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from types import FrameType

import redis
from rq import Queue, worker_registration
from rq.exceptions import DeserializationError, NoSuchJobError, TimeoutFormatError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import call_exception_handlers
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import now, utcformat
from rq.worker import SimpleWorker, WorkerStatus

from common import keys, ledger
from common.backoff import Backoff
from common.config import host_name
from common.errors import JobRejectedError, ModelError, RtaiError, SchemaError
from common.proctitle import set_title
from common.redis_client import describe, write_rejected
from common.replies import text, texts
from common.states import WorkerState
from common.wire import JobArgs, MsgpackSerializer

from . import admission, rq_records
from .jobs import ALLOWED, write_latencies
from .lease import WORKER_TTL_S, Lease, requeue_inflight
from .prefetch import Prefetcher
from .publisher import Settlement
from .routing import Router
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Idle polling starts fast (a new batch is picked up within ~2 ms) and backs off to 20 ms.
POLL_MIN_S = 0.002
POLL_MAX_S = 0.02
#: How often the list of streams is re-read, so new streams are picked up without a restart.
QUEUE_REFRESH_S = 1.0
#: A worker counts as serving a stream (a credit of its producer) this long after it last said so.
SERVER_LAPSE_MS = 5000
#: Failed (refused) jobs are kept a day for `rq info` and post-mortems.
REJECT_TTL_S = 86_400
#: A batch that fails this many times for a reason other than bad input is a poison batch: its
#: frames are counted failed and the job goes to the failed registry.
MAX_ATTEMPTS = 3
#: A batch failed because its model cannot load is kept this long in the failed registry (one per
#: batch of a broken stream: a day of them would pile up).
MODEL_FAILURE_TTL_S = 300
#: How long a batch's attempt counter is kept.
ATTEMPTS_TTL_S = 3600
#: While Redis refuses writes (full, read-only), a held job is offered back to its queue with
#: backoff up to this pause, so the fleet resumes within half a second of memory being freed.
HOLD_RETRY_MAX_S = 0.5
#: Dequeue retry delays are shortened by up to this fraction: workers that lost Redis together spread out.
DEQUEUE_JITTER = 0.25

RETURN_LUA = """
-- KEYS[1]: this worker's in-flight hash, KEYS[2]: the job's queue, KEYS[3]: RQ's started registry
-- of that queue; ARGV[1]: job id. The first write is the LPUSH: a Redis that refuses writes
-- refuses the whole script, and the job stays in flight.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if string.sub(member, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('ZREM', KEYS[3], member) end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

DEQUEUE_LUA = """
-- KEYS[1]: this worker's in-flight hash, KEYS[2]: RQ's suspension flag; ARGV[1]: most jobs to take
-- (dynamic batching), ARGV[2]: P, the number of peers to check (a prefetch, worker/prefetch.py; 0
-- for a dequeue), ARGV[3..2+2P]: each peer's alive key and RQ worker hash, ARGV[3+2P..]: candidate
-- queue keys. A prefetch takes nothing while a live peer is idle. Each job comes from the deepest
-- queue (ties: the first in ARGV, which the worker rotates), so a backlog across streams is taken
-- round-robin; every job taken is in the in-flight hash in the same step. All reads come before the
-- first write; a job after the first is recorded before it is popped, and a refused record (Redis
-- full) ends the taking there: no job is ever popped without being recorded.
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local peers = tonumber(ARGV[2])
for p = 1, peers do
  local alive, rq = ARGV[1 + 2 * p], ARGV[2 + 2 * p]
  if redis.call('EXISTS', alive) == 1 and redis.call('HGET', rq, 'state') == 'idle' then return false end
end
local first = 3 + 2 * peers
local depths = {}
for i = first, #ARGV do depths[i] = redis.call('LLEN', ARGV[i]) end
local out = {}
for k = 1, tonumber(ARGV[1]) do
  local best, depth = nil, 0
  for i = first, #ARGV do
    if depths[i] > depth then best, depth = i, depths[i] end
  end
  if not best then break end
  local queue = ARGV[best]
  local id
  if k == 1 then
    id = redis.call('LPOP', queue)
    redis.call('HSET', KEYS[1], id, queue)
  else
    id = redis.call('LINDEX', queue, 0)
    local rec = redis.pcall('HSET', KEYS[1], id, queue)
    if type(rec) == 'table' and rec.err then break end
    redis.call('LPOP', queue)
  end
  depths[best] = depth - 1
  out[#out + 1] = queue
  out[#out + 1] = id
end
if #out == 0 then return false end
return out
"""


def _taken(got: list[bytes]) -> list[tuple[str, str]]:
    """The dequeue script's reply as (queue key, job id) pairs."""
    return [(got[i].decode(), got[i + 1].decode()) for i in range(0, len(got), 2)]


class FleetWorker(SimpleWorker):
    #: The job whose records and in-flight entry its success pipeline wrote and removed (lean path).
    _released: str | None = None
    #: That pipeline carried RQ's after-job worker heartbeat: the work loop's next one is skipped.
    _beaten = False

    def __init__(self, runtime: Runtime) -> None:
        super().__init__([], connection=runtime.client, name=runtime.name, serializer=MsgpackSerializer)
        self.runtime = runtime
        self.client = runtime.client
        self._dequeue_script = self.client.register_script(DEQUEUE_LUA)
        self.router = Router(self.client, name=runtime.name, gpu=runtime.gpu)
        self._queues_read_at = 0.0
        self.lease = Lease(runtime, self.router, state=lambda: self._wstate)
        self._wstate = WorkerState.STARTING
        self._force_stop = False
        self._last_exc: BaseException | None = None
        #: Causes of failed jobs already logged (each once, in words).
        self._said: set[str] = set()
        self._return_script = self.client.register_script(RETURN_LUA)
        #: Set by worker/process.py when it starts a new loop under the name of one that ended.
        self.resuming = False
        self._served: list[str] = []
        self._turn = 0
        #: Dynamic batching: the jobs taken along with the one RQ runs, and the frames a job had last
        #: (at first 1: a first dequeue takes up to the frame limit in jobs, and gives back the excess).
        self._extras: list[tuple[Job, Queue]] = []
        self._job_frames = 1
        self._admitted_kills = 0
        self._group_kills = 0
        self._last_beat = 0.0
        #: Prefetch (worker/prefetch.py): the workers that serve this worker's streams (a prefetch
        #: takes nothing while one of them is idle), re-read with the queues.
        self._peers: list[str] = []
        self.prefetcher = Prefetcher(self.client, name=self.name, read_jobs=self._read_jobs, allowed=ALLOWED)
        runtime.ready = {}
        runtime.on_stage = self._on_stage if runtime.settings.prefetch_stage != "off" else None
        # A loop that ended on an error (Redis lost mid-group) left its group in its in-flight hash,
        # which bootstrap requeues: none of it may ride along with this loop's first job.
        runtime.coalesced, runtime.outcomes = [], {}
        runtime.deferred_latencies = []  # written with the job's records (handle_job_success)

    # -- queues ---------------------------------------------------------------------------
    def refresh_queues(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._queues_read_at < QUEUE_REFRESH_S:
            return
        self._queues_read_at = now
        streams = self.router.eligible(texts(self.client.smembers(keys.STREAMS)))
        self._renew_servers(streams)
        names = [keys.queue_name(s) for s in streams]
        old = self.queue_names()
        if names != old:
            self.queues = [Queue(n, connection=self.client, serializer=MsgpackSerializer) for n in names]
            self._ordered_queues = self.queues[:]
            with self.client.pipeline() as pipe:
                pipe.hset(self.key, "queues", ",".join(names))
                # RQ's per-queue worker sets, which `rq info` lists workers by (RQ fills them at birth
                # only, when this worker has no queues yet; its death empties the last ones).
                for name in set(old) - set(names):
                    pipe.srem(worker_registration.WORKERS_BY_QUEUE_KEY % name, self.key)
                for name in names:
                    pipe.sadd(worker_registration.WORKERS_BY_QUEUE_KEY % name, self.key)
                pipe.execute()

    def _renew_servers(self, streams: list[str]) -> None:
        """Tell each stream's producer this worker takes its jobs (its credits, producer/flow.py)."""
        if not streams:
            return
        self._served = streams
        now_ms = int(self.runtime.now() * 1000)
        with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.zadd(keys.servers(stream), {self.name: now_ms + SERVER_LAPSE_MS})
                pipe.expire(keys.servers(stream), keys.SERVERS_TTL_S)
                pipe.zrangebyscore(keys.servers(stream), now_ms, "+inf")
            replies = pipe.execute()
        self._peers = sorted({text(w) for members in replies[2::3] for w in members} - {self.name})

    def procline(self, message: str) -> None:
        label = "cpu" if self.runtime.gpu == "cpu" else f"gpu{self.runtime.gpu}"
        set_title(f"rtai-worker:{label} {message}")

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        prefetched = self._take_prefetched()
        if prefetched is not None:
            return prefetched
        self.procline("idle")
        if self.get_state() != WorkerStatus.IDLE:  # RQ's execute_job has just written it, as a rule
            self.set_state(WorkerStatus.IDLE)
        self._wstate = WorkerState.IDLE
        idle_since = time.monotonic()
        pause = POLL_MIN_S
        backoff = Backoff(first=0.1, cap=5.0, jitter=DEQUEUE_JITTER)
        while True:
            if self._stop_requested:  # asked to stop while holding a job that turned out to be gone
                return None
            now = time.monotonic()
            try:
                self._beat_if_due(now)
                self.refresh_queues()
                got = None
                if self.queues:
                    got = self._dequeue_script(
                        keys=[keys.inflight(self.name), keys.RQ_SUSPENDED],
                        args=[self._jobs_to_take(), 0, *self._rotated_queue_keys()],
                    )
                backoff.reset()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = backoff.next()
                log.error("worker %s: Redis unreachable (%s); retrying in %.1f s", self.name, exc, delay)
                time.sleep(delay)
                continue
            except redis.ResponseError as exc:
                if not write_rejected(exc):
                    raise
                delay = min(backoff.next(), HOLD_RETRY_MAX_S)  # Redis is up: retry sooner
                log.warning("worker %s: %s; retrying in %.1f s", self.name, describe(exc), delay)
                time.sleep(delay)
                continue
            if got:
                # From here the worker holds a job: a first SIGTERM lets it finish (see _shutdown).
                self._wstate = WorkerState.BUSY
                self.runtime.fault("after_dequeue")
                fetched = self._fetch_taken(_taken(got))
                if fetched is not None:
                    return fetched
                self._wstate = WorkerState.IDLE
                pause = POLL_MIN_S
                continue
            if timeout is None:
                return None
            if max_idle_time is not None and now - idle_since >= max_idle_time:
                return None
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)

    # -- prefetch (worker/prefetch.py) --------------------------------------------------------
    def _on_stage(self, stage: str) -> None:
        """jobs.run_jobs is at `stage`: start the prefetch there if the settings say so, unless the
        worker is stopping or runs a job that killed a worker before (that one runs alone)."""
        if stage != self.runtime.settings.prefetch_stage or self._group_kills or not self.queues:
            return
        if self._stop_requested or self._force_stop or self.prefetcher.pending:
            return
        take, queues = self._jobs_to_take(), self._rotated_queue_keys()
        peers = [k for w in self._peers for k in (keys.worker_alive(w), keys.rq_worker(w))]
        script, inflight = self._dequeue_script, keys.inflight(self.name)

        def dequeue() -> list[tuple[str, str]]:
            got = script(keys=[inflight, keys.RQ_SUSPENDED], args=[take, len(peers) // 2, *peers, *queues])
            return _taken(got) if got else []

        self.prefetcher.start(dequeue)

    def _take_prefetched(self) -> tuple[Job, Queue] | None:
        """The group the prefetch took, admitted as a dequeue's would be, with its batches ready."""
        got = self.prefetcher.take()
        if got is None:
            return None
        self._wstate = WorkerState.BUSY
        self._beat_if_due(time.monotonic())  # what the dequeue loop does, which a worker fed by prefetches skips
        self.refresh_queues()
        self.runtime.fault("after_dequeue")
        self.runtime.ready = got.ready
        fetched = self._fetch_taken(got.taken, got.reads)
        if fetched is None:
            self.runtime.ready = {}
            self._wstate = WorkerState.IDLE
        return fetched

    def _beat_if_due(self, now: float) -> None:
        """RQ's worker heartbeat, at most once a second (RQ's loop also beats after every job)."""
        if now - self._last_beat >= 1.0:
            self.heartbeat()
            self._last_beat = now

    def _jobs_to_take(self) -> int:
        """How many jobs one dequeue takes: the frame limit over the frames a job had last (at least 1)."""
        return max(1, self.runtime.settings.max_batch_frames // max(1, self._job_frames))

    def _fetch_taken(
        self, taken: list[tuple[str, str]], reads: list[tuple[object, object]] | None = None
    ) -> tuple[Job, Queue] | None:
        """Admit the jobs one dequeue took: the first that runs is RQ's; the others (dynamic batching)
        ride along in its detector call up to the frame limit. A job that killed a worker before runs
        alone (it may be a poison batch: it must not take others down with it); jobs over the limit or
        beside such a job go back to the front of their queues."""
        first: tuple[Job, Queue] | None = None
        first_kills = 0
        extras: list[tuple[Job, Queue]] = []
        back: list[tuple[Job, Queue]] = []
        frames = 0
        if reads is None:
            reads = self._read_jobs([job_id for _q, job_id in taken])
        for (queue_key, job_id), read in zip(taken, reads, strict=True):
            fetched = self._fetch(queue_key, job_id, read)
            if fetched is None:
                continue
            n = int(fetched[0].kwargs["n"])  # admission checked it (JobArgs)
            if first is None:
                first, first_kills, frames = fetched, self._admitted_kills, n
                self._group_kills = first_kills
                self._job_frames = n
            elif first_kills or self._admitted_kills or frames + n > self.runtime.settings.max_batch_frames:
                back.append(fetched)
            else:
                extras.append(fetched)
                frames += n
        for job, queue in reversed(back):
            self._give_back(job, queue)
        self._start_extras(extras)
        return first

    def _start_extras(self, extras: list[tuple[Job, Queue]]) -> None:
        """RQ's `started` for the jobs riding along, in one pipeline; they run in process_batch."""
        self._extras = extras
        self.runtime.coalesced = [(job.id, JobArgs.from_kwargs(job.kwargs)) for job, _queue in extras]
        if not extras:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for job, _queue in extras:
                    pipe.hset(
                        job.key,
                        mapping={
                            "status": JobStatus.STARTED.value,
                            "started_at": utcformat(now()),
                            "worker_name": self.name,
                        },
                    )
                pipe.execute()
        except redis.ResponseError as exc:  # Redis full: they run all the same (they are in flight)
            if not write_rejected(exc):
                raise
            log.debug("worker %s: started state of %d job(s) not recorded: %s", self.name, len(extras), describe(exc))

    def _settle_extras(self) -> None:
        """RQ's bookkeeping for the jobs that rode along: finished, failed (bad input, model), or back
        at the front of their queue when they did not run. After a force stop they stay in flight and
        teardown requeues them."""
        extras, self._extras = self._extras, []
        outcomes, self.runtime.outcomes = self.runtime.outcomes, {}
        self.runtime.coalesced = []
        if self._force_stop:
            return
        finished: list[tuple[Job, Queue, dict]] = []
        for job, queue in extras:
            outcome = outcomes.get(job.id)
            try:
                if outcome is None:
                    self._give_back(job, queue)
                elif isinstance(outcome, BaseException):
                    self._extra_failed(job, queue, outcome)
                else:
                    finished.append((job, queue, outcome))
            except redis.ResponseError as exc:
                if not write_rejected(exc):
                    raise
                self._give_back(job, queue)  # settled or not: a rerun is a duplicate if it was
        if not finished:
            return
        try:
            self._finish_extras(finished)
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            for job, queue, _result in finished:
                self._give_back(job, queue)

    def _extra_failed(self, job: Job, queue: Queue, exc: BaseException) -> None:
        """A job that rode along and failed, handled as handle_job_failure handles the one RQ ran:
        bad input and a model that cannot load fail it at once (the job function counted its frames
        failed), anything else goes to the back of its queue until it has failed MAX_ATTEMPTS times."""
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModelError):
            self._fail_job(job, queue, message, ttl=MODEL_FAILURE_TTL_S)
            return
        if isinstance(exc, SchemaError):
            self._fail_job(job, queue, message)
            return
        args = JobArgs.from_kwargs(job.kwargs)
        attempts = self._count_attempt(args.stream, args.batch)
        if attempts < MAX_ATTEMPTS:
            log.warning(
                "worker %s: job %s (%s#%s) failed (attempt %d of %d), retrying: %s",
                self.name,
                job.id,
                args.stream,
                args.batch,
                attempts,
                MAX_ATTEMPTS,
                message,
            )
            with self.client.pipeline() as pipe:  # MULTI: in flight until it is back in its queue
                pipe.hset(job.key, "status", JobStatus.QUEUED.value)
                pipe.rpush(queue.key, job.id)  # at the back: a failing batch never blocks its stream
                pipe.hdel(keys.inflight(self.name), job.id)
                pipe.execute()
            return
        self.runtime.publisher.settle(Settlement(args.stream, args.batch, failed=args.n))
        message = f"poison batch: failed {attempts} times; last error: {message}"
        log.error("worker %s: job %s (%s#%s) %s", self.name, job.id, args.stream, args.batch, message)
        self._fail_job(job, queue, message)

    def _count_attempt(self, stream: str, batch: int) -> int:
        """One more failure of a batch (other than bad input or its model); returns how many so far."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.attempts(stream), str(batch), 1)
            pipe.expire(keys.attempts(stream), ATTEMPTS_TTL_S)
            attempts, _ = pipe.execute()
        return int(attempts)

    def _finish_extras(self, finished: list[tuple[Job, Queue, dict]]) -> None:
        """RQ's records of the jobs that rode along and ran, as RQ writes them for the job it ran
        (rq_records.record_success; they count in the worker's successful jobs, while their time is
        the job RQ ran's), in one MULTI/EXEC with their removal from the in-flight hash. A late
        finish (after the lease ran out and another worker took the job) is recorded too, with the
        `duplicate` status the settle script gave it."""
        with self.client.pipeline() as pipe:
            for job, queue, result in finished:
                ttl = job.get_result_ttl(self.default_result_ttl)
                if ttl == 0:  # no result kept: finished, and gone in a second
                    pipe.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": utcformat(now())})
                    pipe.expire(job.key, 1)
                else:
                    rq_records.record_success(pipe, job, queue, result, worker_name=self.name, result_ttl=ttl)
                pipe.hdel(keys.inflight(self.name), job.id)
            pipe.hincrby(self.key, "successful_job_count", len(finished))
            pipe.execute()

    def _give_back(self, job: Job, queue: Queue) -> None:
        """A held job back at the front of its queue (retried while Redis refuses writes)."""
        delay = 0.05
        while not self._force_stop:
            try:
                self._return_script(
                    keys=[keys.inflight(self.name), queue.key, queue.started_job_registry.key], args=[job.id]
                )
                return
            except redis.RedisError:
                time.sleep(delay)
                delay = min(delay * 2, HOLD_RETRY_MAX_S)

    def _rotated_queue_keys(self) -> list[str]:
        """The queue keys, starting one further each time: equally deep queues (with credit-based
        flow, every stream keeps about one batch waiting) are served round-robin, not by name."""
        qk = self.queue_keys()
        k = self._turn % len(qk)
        self._turn += 1
        return qk[k:] + qk[:k]

    def check_for_suspension(self, burst: bool) -> None:
        """`rq suspend` is honoured inside the dequeue script, so a resume is seen within milliseconds."""

    def _read_jobs(self, job_ids: list[str]) -> list[tuple[object, object]]:
        """Each job's raw hash and kill count, in one round trip for every job a dequeue took (a
        reply that is an error, e.g. a key that is not a hash, comes back as the exception)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(Job.key_for(job_id))
                pipe.get(keys.kills(job_id))
            replies = pipe.execute(raise_on_error=False)
        return list(zip(replies[::2], replies[1::2], strict=True))

    def _fetch(self, queue_key: str, job_id: str, read: tuple[object, object]) -> tuple[Job, Queue] | None:
        queue = Queue.from_queue_key(queue_key, connection=self.client, serializer=MsgpackSerializer)
        job = self._admit(queue, job_id, *read)
        if job is None:
            self.client.hdel(keys.inflight(self.name), job_id)
            return None
        return job, queue

    def _admit(self, queue: Queue, job_id: str, fields: object, kills: object) -> Job | None:
        """The job to run, restored from the hash that passed admission (`fields`, with its kill
        count, as _read_jobs read them); None when there is none to run: gone, refused (forged:
        counted, reason in the failed registry) or a poison batch."""
        job = Job(job_id, connection=self.client, serializer=MsgpackSerializer)
        for reply in (fields, kills):
            if isinstance(reply, redis.ResponseError):  # not a hash (a string): nothing RQ could run either
                self._count_rejected(f"job {job_id}: unreadable ({reply})")
                return None
            if isinstance(reply, BaseException):
                raise reply
        if not isinstance(fields, dict) or not fields:
            return None
        try:
            args = admission.check(fields, queue_key=queue.key, allowed=ALLOWED)
            job.restore(fields)
        except JobRejectedError as exc:
            self._reject(job, queue, str(exc))
            return None
        except (ValueError, TypeError, KeyError, NoSuchJobError, TimeoutFormatError) as exc:
            self._reject(job, queue, f"job hash does not restore: {exc}")
            return None
        self._admitted_kills = int(kills) if isinstance(kills, bytes | str | int) else 0
        if self._admitted_kills >= MAX_ATTEMPTS:
            self._fail_poison(job, queue, args, self._admitted_kills)
            return None
        return job

    def _fail_poison(self, job: Job, queue: Queue, args: JobArgs, kills: int) -> None:
        """A batch whose worker died holding it MAX_ATTEMPTS times: its frames are counted failed
        (once, by the settle script) and the job goes to the failed registry."""
        settled = self.runtime.publisher.settle(Settlement(args.stream, args.batch, failed=args.n))
        message = f"poison batch {args.stream}#{args.batch}: killed its worker {kills} times"
        if settled:
            message += f"; its {args.n} frames are counted failed"
        log.error("worker %s: job %s %s", self.name, job.id, message)
        self._fail_job(job, queue, message)
        self.client.delete(keys.kills(job.id))

    # -- running jobs ---------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        self._wstate = WorkerState.BUSY
        self._released, self._beaten = None, False
        try:
            reason = self._refusal(job)
            if reason is None:
                self._execute_holding(job, queue)
            else:
                self._reject(job, queue, reason)
        finally:
            if not self._force_stop and self._released != job.id:
                self.client.hdel(keys.inflight(self.name), job.id)
            self._settle_extras()
            self.runtime.ready = {}
            latencies, self.runtime.deferred_latencies = self.runtime.deferred_latencies, []
            if latencies:  # a job that failed, or whose records RQ wrote (result_ttl 0)
                write_latencies(self.runtime, latencies)
            self._wstate = WorkerState.IDLE

    def _execute_holding(self, job: Job, queue: Queue) -> None:
        """RQ's execution, except that when Redis refuses a write anywhere in it (out of memory,
        read-only replica, MISCONF) the job stays in this worker's in-flight hash until it is back
        at the front of its queue; the worker lives on. A batch that did settle is a duplicate
        when it runs again (its settled marker)."""
        try:
            # SimpleWorker.execute_job, except that the success pipeline also sets the worker idle.
            execution = self.prepare_execution(job)
            self.perform_job(job, queue, execution)
            if self.get_state() != WorkerStatus.IDLE:
                self.set_state(WorkerStatus.IDLE)
        except redis.ResponseError as exc:
            if not write_rejected(exc):
                raise
            self._hold(job, queue, exc)

    # -- the lean job path: RQ's records in one pipeline at the start, one at the end (rq_records.py)
    def prepare_execution(self, job: Job) -> Execution:
        """RQ's prepare_execution and prepare_job_execution in one round trip."""
        with self.client.pipeline() as pipe:
            execution = rq_records.record_start(pipe, self, job)
            pipe.execute()
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Written by prepare_execution already; only the process title is left."""
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """A failed job's end is RQ's; a job that returned has its end written by handle_job_success."""
        if job.get_status(refresh=False) == JobStatus.FAILED:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry, execution: Execution) -> None:
        """RQ's records of a job that returned, in one MULTI/EXEC with what follows them in RQ's loop
        (the worker idle, its heartbeat) and the job's removal from the in-flight hash: a kill before
        it leaves the job in flight (requeued; a settled batch reruns as a duplicate), after it the
        job is finished. A job whose result is not kept (result_ttl 0) or that repeats is RQ's."""
        ttl = job.get_result_ttl(self.default_result_ttl)
        if ttl == 0 or job.repeats_left:
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        latencies, self.runtime.deferred_latencies = self.runtime.deferred_latencies, []
        with self.client.pipeline() as pipe:
            for stream, latencies_ms in latencies or ():  # a statistic: lost if Redis refuses the whole
                ledger.record_latencies(pipe, stream, latencies_ms)
            rq_records.record_success(
                pipe, job, queue, job._result, worker_name=self.name, result_ttl=ttl, execution=execution
            )
            self.increment_successful_job_count(pipeline=pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[operator]
            self.executions.pop(execution.id, None)
            pipe.hdel(keys.inflight(self.name), job.id)
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            self.heartbeat(pipeline=pipe)
            pipe.execute()
        self._released, self._beaten = job.id, True
        self._last_beat = time.monotonic()

    def _hold(self, job: Job, queue: Queue, exc: redis.ResponseError) -> None:
        t0 = time.monotonic()
        log.warning(
            "worker %s: %s while running job %s; holding it until it can be requeued", self.name, describe(exc), job.id
        )
        delay = 0.05
        while not self._force_stop:
            try:
                self._return_script(
                    keys=[keys.inflight(self.name), queue.key, queue.started_job_registry.key], args=[job.id]
                )
            except redis.RedisError:
                time.sleep(delay)
                delay = min(delay * 2, HOLD_RETRY_MAX_S)
                continue
            log.warning("worker %s: job %s back in its queue after %.1f s", self.name, job.id, time.monotonic() - t0)
            return

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's heartbeat; a Redis that refuses writes (full) does not end the work loop. The one
        RQ's loop sends after a job is skipped when the job's success pipeline carried it."""
        if self._beaten and timeout is None and pipeline is None:
            self._beaten = False
            return
        try:
            super().heartbeat(timeout, pipeline)
        except redis.ResponseError as exc:
            if pipeline is not None or not write_rejected(exc):
                raise
            log.debug("worker %s: RQ heartbeat skipped: %s", self.name, describe(exc))

    def set_state(self, state: str, pipeline=None) -> None:
        """RQ's state field; a Redis that refuses writes (full) does not end the work loop."""
        try:
            super().set_state(state, pipeline)
        except redis.ResponseError as exc:
            if pipeline is not None or not write_rejected(exc):
                raise
            log.debug("worker %s: RQ state not recorded: %s", self.name, describe(exc))

    def register_birth(self) -> None:
        """RQ refuses a name whose registration has no death date; a loop that resumes under the
        name of one that ended (its death could not be written, e.g. Redis was full) clears it."""
        if self.resuming:
            self.connection.delete(self.key)
        super().register_birth()

    def _shutdown(self) -> None:
        """First SIGTERM/SIGINT: a worker holding a job (from the moment the dequeue script gave it
        one, before RQ calls it busy) finishes that job, then stops; an idle worker stops now."""
        if self._wstate == WorkerState.BUSY:
            self._stop_requested = True
            self.set_shutdown_requested_date()
            return
        super()._shutdown()

    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM/SIGINT asked this worker to stop (RQ records the time)."""
        return self._shutdown_requested_date is not None

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Second SIGTERM/SIGINT: stop now; the job in hand goes back to the front of its queue."""
        self._force_stop = True
        super().request_force_stop(signum, frame)

    def handle_exception(self, job: Job, *exc_info) -> None:
        self._last_exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(self._last_exc, RtaiError):
            # The project's own errors say what is wrong in words: one line per cause (a missing model
            # fails every batch the same way), the traceback at debug level; RQ would log it whole each time.
            cause = f"{type(self._last_exc).__name__}: {self._last_exc}"
            if cause not in self._said:
                self._said.add(cause)
                log.error("job of %s failed: %s", job.origin, cause)
            log.debug("job %s failed", job.id, exc_info=exc_info)
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry=None, exc_string="", execution=None
    ) -> None:
        exc, self._last_exc = self._last_exc, None
        if self._force_stop or isinstance(exc, SystemExit | KeyboardInterrupt):
            # Interrupted, not failed: leave it in the in-flight hash; teardown requeues it.
            self._back_to_queued(job, execution)
            return
        if exc is not None and write_rejected(exc):
            # Redis refused a write (full): not the batch's fault; _execute_holding keeps the job.
            raise exc
        if isinstance(exc, SchemaError):
            # Bad input: the job function has already counted its frames as failed.
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        if isinstance(exc, ModelError):
            # The model cannot load: frames already counted failed and the stream is in `error`;
            # every batch of the stream fails the same way, so keep each record only briefly.
            job.failure_ttl = MODEL_FAILURE_TTL_S
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        kw = job.kwargs
        stream, batch, n = kw["stream"], kw["batch"], kw["n"]  # admission checked them (JobArgs)
        attempts = self._count_attempt(stream, batch)
        if attempts < MAX_ATTEMPTS:
            log.warning(
                "worker %s: job %s (%s#%s) failed (attempt %d of %d), retrying: %s",
                self.name,
                job.id,
                stream,
                batch,
                attempts,
                MAX_ATTEMPTS,
                exc,
            )
            self._back_to_queued(job, execution)
            self.client.rpush(queue.key, job.id)  # at the back: a failing batch never blocks its stream
            return
        self.runtime.publisher.settle(Settlement(stream, batch, failed=n))
        exc_string = f"poison batch: failed {attempts} times; last error: {exc_string}"
        log.error("worker %s: job %s (%s#%s) %s", self.name, job.id, stream, batch, exc_string.splitlines()[0])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def _back_to_queued(self, job: Job, execution) -> None:
        with self.client.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            pipe.execute()

    def _refusal(self, job: Job) -> str | None:
        """A second look at the job RQ is about to run (the full check is admission.check, in _admit)."""
        try:
            func_name = job.func_name
        except DeserializationError as exc:
            return f"job data is not valid msgpack: {exc}"
        if func_name not in ALLOWED:
            return f"job function {func_name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED))})"
        if job._success_callback_name or job._failure_callback_name or job._stopped_callback_name:
            return "job has callbacks; producers never set one"
        return None

    def _reject(self, job: Job, queue: Queue, reason: str) -> None:
        self._count_rejected(f"job {job.id}: {reason}")
        self._fail_job(job, queue, f"refused by {self.name}: {reason}")

    def _fail_job(self, job: Job, queue: Queue, message: str, *, ttl: int = REJECT_TTL_S) -> None:
        """Mark a job failed with `message` in its queue's failed registry (kept `ttl` seconds) and
        out of this worker's in-flight hash, writing only the status fields: a forged hash is never
        saved back through RQ, nor needs to restore."""
        registry = FailedJobRegistry(queue=queue, serializer=MsgpackSerializer)
        with self.client.pipeline() as pipe:
            pipe.hset(
                job.key,
                mapping={
                    "status": JobStatus.FAILED.value,
                    "ended_at": utcformat(now()),
                    "exc_info": zlib.compress(message.encode()),
                },
            )
            pipe.expire(job.key, ttl)
            pipe.zadd(registry.key, {job.id: int(time.time()) + ttl})
            Result.create_failure(job, ttl, message, worker_name=self.name, pipeline=pipe)
            pipe.hdel(keys.inflight(self.name), job.id)
            pipe.execute()

    def _count_rejected(self, message: str) -> None:
        log.error("worker %s refused %s", self.name, message)
        with self.client.pipeline() as pipe:
            pipe.hincrby(keys.FLEET, "rejected_jobs", 1)
            pipe.hincrby(keys.worker(self.name), "rejected", 1)
            pipe.hset(keys.worker(self.name), "last_error", message[:500])
            pipe.execute()

    # -- birth, reaping, teardown ---------------------------------------------------------
    def bootstrap(self, *args, **kwargs) -> None:
        super().bootstrap(*args, **kwargs)
        rt = self.runtime
        # A worker resuming under the same name (after a Redis outage ended RQ's loop) may have left
        # a job in its in-flight hash that no teardown could requeue: it holds nothing yet, so put
        # whatever is there back.
        leftover = requeue_inflight(self.client, self.name, force=True)
        if leftover:
            log.warning("worker %s: requeued %s left from before", self.name, leftover)
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
        self.refresh_queues(force=True)
        self.lease.start()

    def teardown(self) -> None:
        # A prefetch still running must end before the in-flight jobs are put back (what it took is
        # in the in-flight hash, and goes back with the rest).
        try:
            self.prefetcher.close()
        except redis.RedisError as exc:
            log.warning("worker %s: prefetch ended with %s", self.name, describe(exc))
        self.lease.stop()
        try:
            leftover = requeue_inflight(self.client, self.name, force=True)
            if leftover:
                log.warning("worker %s: requeued %s on the way out", self.name, leftover)
            self.router.release()
            with self.client.pipeline() as pipe:
                pipe.delete(keys.worker_alive(self.name))
                pipe.hset(
                    keys.worker(self.name),
                    mapping={"state": WorkerState.STOPPED.value, **self.runtime.inference_counts()},
                )
                for stream in self._served:  # its producers' credits drop now, not when they lapse
                    pipe.zrem(keys.servers(stream), self.name)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("worker %s: could not clean up: %s", self.name, exc)
        try:
            super().teardown()
        except redis.RedisError as exc:
            log.warning("worker %s: RQ teardown failed: %s", self.name, exc)
