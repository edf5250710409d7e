"""The worker's job path: the broker (every move of a job, one Lua script each), RQ's records
(rq_compat) and the policies called at named points."""

from .policies import Admission, Attempts, Prefetch, StaleFrames, Verdict
from .redis_broker import RedisBroker, Taken, requeue_dead

__all__ = ["Admission", "Attempts", "Prefetch", "RedisBroker", "StaleFrames", "Taken", "Verdict", "requeue_dead"]
