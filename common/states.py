"""States of streams and workers, as stored in Redis and shown by `rtai status`."""

from __future__ import annotations

from enum import Enum


class StreamState(str, Enum):
    PENDING = "pending"  # declared, not claimed by a producer daemon yet
    UNCLAIMED = "unclaimed"  # declared, and no producer daemon is running to claim it
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    STALLED = "stalled"
    STOPPED = "stopped"
    ERROR = "error"


class WorkerState(str, Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    BACKOFF = "backoff"  # a supervised worker that keeps dying, waiting to be restarted


class Outcome(str, Enum):
    """How a frame left the fleet; each maps onto one ledger counter."""

    PUBLISHED = "published"
    DROPPED_BACKPRESSURE = "dropped_backpressure"
    DROPPED_STALE = "dropped_stale"
    DROPPED_UNREACHABLE = "dropped_unreachable"  # Redis was down when the producer had them
    DROPPED_REDIS_FULL = "dropped_redis_full"  # Redis refused the batch (out of memory, read-only)
    #: Redis lost the batch after acknowledging it: a failover's unreplicated tail (producer/enqueue.py)
    DROPPED_REDIS_FAILOVER = "dropped_redis_failover"
    FAILED = "failed"
    SKIPPED_STATIC = "skipped_static"  # motion gating held the frame back: nothing moved, nothing to see
