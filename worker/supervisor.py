"""Supervise one worker process per device: requeue a dead child's job at once, restart within budget.

`rtai worker --all-gpus` runs one child per visible GPU with CUDA_VISIBLE_DEVICES set to that GPU
(so every child sees its GPU as cuda:0), or N CPU children with `--workers N`. The supervisor waits
on its children; the moment waitpid returns for one, its in-flight jobs go back to the front of
their queues, then it is restarted, unless it died more than the restart budget allows.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import redis

from common import keys
from common.config import child_env, host_name
from common.exitcodes import EXIT_CHILDREN, EXIT_OK
from common.proctitle import set_title
from common.redis_client import connect, describe

from .fleet_worker import requeue_inflight

log = logging.getLogger(__name__)

#: The restart budget (WorkerSettings.restart_budget) counts deaths over this window.
RESTART_WINDOW_S = 60.0
#: After a stop request, children get this long to finish their batch before SIGKILL.
STOP_GRACE_S = 30.0


@dataclass
class Slot:
    label: str  # "gpu0", "cpu1"
    device: str  # device inside the child: cuda:0 or cpu
    cuda_visible: str | None  # physical GPU for CUDA_VISIBLE_DEVICES
    name: str = ""
    proc: subprocess.Popen | None = None
    deaths: list[float] = field(default_factory=list)
    given_up: bool = False


class Supervisor:
    def __init__(self, slots: list[Slot], *, redis_url: str, child_args: list[str], restart_budget: int = 5) -> None:
        self.slots = slots
        self.restart_budget = restart_budget
        self.redis_url = redis_url
        self.child_args = child_args
        self.client = connect(redis_url)
        self.stopping = False
        self.requeued: list[str] = []
        self._signals = 0

    def _spawn(self, slot: Slot) -> None:
        slot.name = f"{host_name()}:{slot.label}:{uuid.uuid4().hex[:6]}"
        cmd = [
            sys.executable,
            "-m",
            "common.cli",
            "worker",
            "--device",
            slot.device,
            "--name",
            slot.name,
            *self.child_args,
        ]
        extra = {"RTAI_REDIS_URL": self.redis_url}
        if slot.cuda_visible is not None:
            extra["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible
        slot.proc = subprocess.Popen(cmd, env=child_env(**extra))
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
        if len(slot.deaths) > self.restart_budget:
            slot.given_up = True
            log.error(
                "supervisor: %s died %d times in %.0f s; leaving it down",
                slot.label,
                len(slot.deaths),
                RESTART_WINDOW_S,
            )
            return
        self._spawn(slot)

    def _requeue_dead(self, name: str) -> list[str]:
        """The dead child's jobs back to their queues; when Redis refuses (full, away) the lease
        backstop does it later (the child's alive key is gone), and the supervisor carries on."""
        try:
            ids = requeue_inflight(self.client, name, force=True)
            self.client.delete(keys.worker_alive(name))
        except redis.RedisError as exc:
            log.warning(
                "supervisor: could not requeue the jobs of %s now (%s); the lease reaper will", name, describe(exc)
            )
            return []
        return ids

    def run(self) -> int:
        set_title(f"rtai-supervisor:{','.join(s.label for s in self.slots)}")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._spawn(slot)
        by_pid = {s.proc.pid: s for s in self.slots if s.proc is not None}
        while any(s.proc is not None for s in self.slots):
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            slot = by_pid.pop(pid, None)
            if slot is None:
                continue
            self._child_died(slot, os.waitstatus_to_exitcode(status))
            if slot.proc is not None:
                by_pid[slot.proc.pid] = slot
            if all(s.given_up for s in self.slots):
                return EXIT_CHILDREN
        return EXIT_CHILDREN if any(s.given_up for s in self.slots) else EXIT_OK


def gpu_slots(visible: list[str] | None, gpu_count: int) -> list[Slot]:
    physical = visible if visible is not None else [str(i) for i in range(gpu_count)]
    return [Slot(label=f"gpu{p}", device="cuda:0", cuda_visible=p) for p in physical]


def cpu_slots(n: int) -> list[Slot]:
    return [Slot(label=f"cpu{i}", device="cpu", cuda_visible=None) for i in range(n)]
