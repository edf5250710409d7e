"""Supervise one worker process per device: requeue a dead child's job at once, restart within budget.

`rtai worker --all-gpus` runs one child per visible GPU with CUDA_VISIBLE_DEVICES set to that GPU
(so every child sees its GPU as cuda:0), or N CPU children with `--workers N`. The supervisor waits
on its children; the moment waitpid returns for one, its in-flight jobs go back to the front of
their queues (counting a death against each: a batch that kills every worker that runs it ends as
a poison batch, see broker/policies.py MAX_ATTEMPTS), then it is restarted. A child that died more often
than the restart budget allows in RESTART_WINDOW_S is restarted after an exponential backoff
(1 s, 2 s, 4 s ... BACKOFF_MAX_S) instead of being left down; the dead child's stats hash says
`state=backoff` and why, for `rtai status`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import redis

from common import keys
from common.config import child_env, host_name, role_command
from common.exitcodes import EXIT_OK
from common.parentdeath import die_with_parent
from common.proctitle import set_title
from common.redis_client import connect, describe
from common.shards import Shards
from common.states import WorkerState

from .broker import requeue_dead
from .lease import WORKER_TTL_S

log = logging.getLogger(__name__)

#: The restart budget (WorkerSettings.restart_budget) counts deaths over this window.
RESTART_WINDOW_S = 60.0
#: After a stop request, children get this long to finish their batch before SIGKILL.
STOP_GRACE_S = 30.0
#: Past the restart budget, restarts wait 1 s, 2 s, 4 s ... up to this: a GPU is never left down.
BACKOFF_MAX_S = 60.0
#: How often the supervisor looks for dead children while a restart is pending.
POLL_S = 0.05


@dataclass
class Slot:
    label: str  # "gpu0", "cpu1"
    device: str  # device inside the child: cuda:0 or cpu
    cuda_visible: str | None  # physical GPU for CUDA_VISIBLE_DEVICES
    name: str = ""
    proc: subprocess.Popen | None = None
    deaths: list[float] = field(default_factory=list)
    #: monotonic time of a pending restart (the child is backing off), else None
    restart_at: float | None = None


class Supervisor:
    def __init__(self, slots: list[Slot], *, redis_url: str, child_args: list[str], restart_budget: int = 5) -> None:
        self.slots = slots
        self.restart_budget = restart_budget
        self.redis_url = redis_url
        self.child_args = child_args
        connect(redis_url).close()  # a wrong URL fails fast, saying why
        #: The fleet's shards: a dead child held jobs on any of them.
        self.shards = Shards.from_url(redis_url)
        self.client = self.shards.home
        self.stopping = False
        self.requeued: list[str] = []
        self._signals = 0

    def _spawn(self, slot: Slot) -> None:
        slot.name = f"{host_name()}:{slot.label}:{uuid.uuid4().hex[:6]}"
        cmd = role_command("worker", "--device", slot.device, "--name", slot.name, *self.child_args)
        extra = {"RTAI_REDIS_URL": self.redis_url}
        if slot.cuda_visible is not None:
            extra["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible
        # A killed supervisor takes its children with it (they would otherwise serve on unsupervised).
        slot.proc = subprocess.Popen(cmd, env=child_env(**extra), preexec_fn=die_with_parent())
        log.info("supervisor: started %s (pid %d)", slot.name, slot.proc.pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        self.stopping = True
        sig = signal.SIGTERM if self._signals == 1 else signal.SIGKILL
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(sig)

    def _child_died(self, slot: Slot, code: int) -> None:
        ids = self._requeue_dead(slot.name)
        if ids:
            self.requeued.extend(ids)
            log.warning("supervisor: %s exited %d; requeued %s", slot.name, code, ids)
        slot.proc = None
        if self.stopping:
            return
        now = time.monotonic()
        slot.deaths = [t for t in slot.deaths if now - t < RESTART_WINDOW_S] + [now]
        over = len(slot.deaths) - self.restart_budget
        if over <= 0:
            self._spawn(slot)
            return
        delay = backoff_s(over)
        slot.restart_at = now + delay
        reason = (
            f"died {len(slot.deaths)} times in {RESTART_WINDOW_S:.0f} s (last: {exit_reason(code)}); "
            f"restarting in {delay:.0f} s"
        )
        log.error("supervisor: %s %s", slot.label, reason)
        self._show(slot.name, WorkerState.BACKOFF, reason, ttl_s=int(delay + WORKER_TTL_S))

    def _show(self, name: str, state: WorkerState, reason: str, ttl_s: int | None = None) -> None:
        """Put a slot's state and reason on its (dead) child's stats hash, for `rtai status`."""
        try:
            with self.client.pipeline() as pipe:
                pipe.hset(keys.worker(name), mapping={"state": state.value, "reason": reason})
                if ttl_s is not None:
                    pipe.expire(keys.worker(name), ttl_s)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("supervisor: could not show %s as %s: %s", name, state.value, exc)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                dead = slot.name
                self._spawn(slot)
                self._show(dead, WorkerState.STOPPED, f"restarted after a backoff as {slot.name}")

    def _reap_one(self) -> tuple[int, int] | None:
        """Wait for a child to exit; with a restart pending, only until it is due (None then)."""
        while True:
            pending = [s.restart_at for s in self.slots if s.restart_at is not None]
            if not pending or self.stopping:
                try:
                    return os.wait()
                except ChildProcessError:
                    return None
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid:
                return pid, status
            if time.monotonic() >= min(pending):
                return None
            time.sleep(POLL_S)

    def _requeue_dead(self, name: str) -> list[str]:
        """The dead child's jobs back to their queues (each counts a death of its job, unless the
        supervisor is stopping); when Redis refuses (full, away) the lease backstop does it later
        (the child's alive key is gone), and the supervisor carries on."""
        ids: list[str] = []
        for i, client in self.shards.clients():
            try:
                ids += requeue_dead(client, name, force=True, died=not self.stopping)
                client.delete(keys.worker_alive(name))
            except redis.RedisError as exc:
                where = f" on {self.shards.label(i)}" if self.shards.sharded else ""
                log.warning(
                    "supervisor: could not requeue the jobs of %s%s now (%s); the lease reaper will",
                    name,
                    where,
                    describe(exc),
                )
        return ids

    def run(self) -> int:
        set_title(f"rtai-supervisor:{','.join(s.label for s in self.slots)}")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._spawn(slot)
        while True:
            if self.stopping:
                for slot in self.slots:
                    slot.restart_at = None
            got = self._reap_one()
            if got is not None:
                pid, status = got
                dead = next((s for s in self.slots if s.proc is not None and s.proc.pid == pid), None)
                if dead is not None:
                    self._child_died(dead, os.waitstatus_to_exitcode(status))
                continue
            for slot in self.slots:  # a child that Popen.poll() reaped (the signal handler polls)
                if slot.proc is not None and slot.proc.poll() is not None:
                    self._child_died(slot, slot.proc.returncode)
            self._restart_due()
            if not any(s.proc is not None or s.restart_at is not None for s in self.slots):
                break
        return EXIT_OK


def backoff_s(over: int) -> float:
    """The wait before restarting a child that died `over` times more than its budget allows."""
    return min(BACKOFF_MAX_S, 2.0 ** (over - 1))


def exit_reason(code: int) -> str:
    """A child's exit code in words: 'killed by SIGKILL', 'exit code 1'."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def gpu_slots(visible: list[str] | None, gpu_count: int) -> list[Slot]:
    physical = visible if visible is not None else [str(i) for i in range(gpu_count)]
    return [Slot(label=f"gpu{p}", device="cuda:0", cuda_visible=p) for p in physical]


def cpu_slots(n: int) -> list[Slot]:
    return [Slot(label=f"cpu{i}", device="cpu", cuda_visible=None) for i in range(n)]
