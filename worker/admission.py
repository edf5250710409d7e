"""Which RQ jobs a worker runs, decided from the raw job hash before anything is imported or called.

RQ restores a job from its Redis hash and, when it runs it, imports and calls every dotted name the
hash holds (the function, on_success / on_failure / on_stopped callbacks) and honours dependencies,
retries, webhooks and repeats. Producers (producer/enqueue.py) use none of these, so a job runs only
when its hash holds nothing but what a producer and RQ's own bookkeeping write, its function is in
the allow-list, and its kwargs pass the JobArgs contract (common/wire.py). Nothing here imports,
calls or unpickles anything named in the hash.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection

from rq.job import JobStatus

from common import keys
from common.errors import JobRejectedError, SchemaError
from common.wire import JobArgs, unpackb

#: Fields a producer's enqueue writes and RQ's bookkeeping adds while a job is queued, run, requeued.
RQ_FIELDS = frozenset(
    {
        "created_at",
        "origin",
        "description",
        "status",
        "enqueued_at",
        "started_at",
        "ended_at",
        "last_heartbeat",
        "worker_name",
        "timeout",
        "result_ttl",
        "failure_ttl",
        "data",
        "exc_info",
        "result",
    }
)
#: Fields RQ writes on every job, empty unless a feature producers never use is on.
MUST_BE_EMPTY = {
    "success_callback_name": "an on_success callback",
    "failure_callback_name": "an on_failure callback",
    "stopped_callback_name": "an on_stopped callback",
    "group_id": "a job group",
}
#: Readable names of the RQ features behind other fields, for the refusal's reason.
FEATURES = {
    "success_callback_timeout": "an on_success callback",
    "failure_callback_timeout": "an on_failure callback",
    "stopped_callback_timeout": "an on_stopped callback",
    "dependency_id": "dependencies",
    "dependency_ids": "dependencies",
    "allow_dependency_failures": "dependencies",
    "retries_left": "an RQ Retry",
    "retry_intervals": "an RQ Retry",
    "number_of_retries": "an RQ Retry",
    "enqueue_at_front_on_retry": "an RQ Retry",
    "enqueue_at_front": "enqueue_at_front",
    "meta": "meta",
    "webhooks": "webhooks",
    "repeats_left": "an RQ Repeat",
    "repeat_intervals": "an RQ Repeat",
    "rate_limit_key": "a rate limit",
    "rate_limit_concurrency": "a rate limit",
    "ttl": "a queue ttl",
}
#: A job's data is small (a function name and four kwargs); more than this is not a producer's job.
MAX_JOB_DATA = 64 * 1024
_STATUSES = frozenset(s.value for s in JobStatus)
#: Fields RQ parses as integers (a producer writes plain ints).
_INTEGERS = (b"timeout", b"result_ttl", b"failure_ttl")
_INTEGER_RE = re.compile(rb"-?[0-9]{1,12}")


def check(fields: dict[bytes, bytes], *, queue_key: str, allowed: Collection[str]) -> JobArgs:
    """The job's validated kwargs; JobRejectedError (with the reason) for anything a producer never sends."""
    for raw_name, value in fields.items():
        name = raw_name.decode(errors="replace")
        if name in RQ_FIELDS:
            continue
        if name in MUST_BE_EMPTY:
            if value:
                raise JobRejectedError(
                    f"job has {MUST_BE_EMPTY[name]} ({name}={value[:80]!r}); producers never set one"
                )
            continue
        feature = FEATURES.get(name, f"the field {name[:40]!r}")
        raise JobRejectedError(f"job uses {feature} ({name}); producers never set it")
    for integer in _INTEGERS:
        number = fields.get(integer)
        if number and not _INTEGER_RE.fullmatch(number):
            raise JobRejectedError(f"job field {integer.decode()} is {number[:40]!r}, not an integer")
    status = fields.get(b"status", b"").decode(errors="replace")
    if status and status not in _STATUSES:
        raise JobRejectedError(f"job status {status[:40]!r} is not an RQ status")
    args = _kwargs(fields.get(b"data"), allowed)
    if queue_key != keys.queue_key(args.stream):
        raise JobRejectedError(f"job for stream {args.stream!r} was found on queue {queue_key!r}")
    origin = fields.get(b"origin", b"").decode(errors="replace")
    if origin and origin != keys.queue_name(args.stream):
        raise JobRejectedError(f"job origin {origin[:80]!r} is not stream {args.stream!r}'s queue")
    return args


def _kwargs(data: bytes | None, allowed: Collection[str]) -> JobArgs:
    if not data:
        raise JobRejectedError("job has no data")
    try:
        inflater = zlib.decompressobj()
        plain = inflater.decompress(data, MAX_JOB_DATA)
        if inflater.unconsumed_tail:
            raise JobRejectedError(f"job data inflates to more than {MAX_JOB_DATA} bytes")
    except zlib.error:
        plain = data  # RQ falls back to uncompressed data too
    if len(plain) > MAX_JOB_DATA:
        raise JobRejectedError(f"job data is {len(plain)} bytes, more than {MAX_JOB_DATA}")
    try:
        payload = unpackb(plain)
    except SchemaError as exc:
        raise JobRejectedError(f"job data is not valid msgpack: {exc}") from exc
    if not isinstance(payload, list) or len(payload) != 4:
        raise JobRejectedError("job data is not [function, instance, args, kwargs]")
    func, instance, args, kwargs = payload
    if func not in allowed:
        names = ", ".join(sorted(allowed))
        raise JobRejectedError(f"job function {str(func)[:100]!r} is not allowed (allowed: {names})")
    if instance is not None:
        raise JobRejectedError("job names an instance method; producers never send one")
    if args != []:
        raise JobRejectedError("job has positional args; producers send kwargs only")
    try:
        return JobArgs.from_kwargs(kwargs)
    except SchemaError as exc:
        raise JobRejectedError(str(exc)) from exc
