"""`rtai status --watch`: the same report as `rtai status`, as rich tables redrawn in place."""

from __future__ import annotations

import time
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common import ledger
from common.clock import SKEW_WARN_S

from . import status


def _num(value: object) -> str:
    return "-" if value is None else str(value)


def streams_table(report: dict[str, Any]) -> Table:
    table = Table(title="streams", title_justify="left", expand=False)
    table.add_column("STREAM")
    table.add_column("STATE")
    for name in ("PROD", "PUB", "DROP", "FAIL", "FLIGHT", "QUEUE", "FPS_OUT", "P50ms", "P99ms"):
        table.add_column(name, justify="right")
    for sid, s in report["streams"].items():
        led, lat = s["ledger"], s["latency_ms"]
        notes = [f"reason: {s['reason']}"] if s["reason"] else []
        if abs(s.get("clock_offset_s", 0.0)) > SKEW_WARN_S:
            notes.append(f"clock offset {s['clock_offset_s']:+.1f} s")
        state = Text(s["state"], style="red" if s["state"] in ("error", "stalled") else "")
        if notes:
            state.append("\n" + "\n".join(notes), style="dim")
        table.add_row(
            sid,
            state,
            str(led["produced"]),
            str(led["published"]),
            str(ledger.dropped(led)),
            str(led["failed"]),
            str(led["in_flight"]),
            str(s["queue_depth"]),
            str(s["fps_out"]),
            _num(lat["p50"]),
            _num(lat["p99"]),
        )
    return table


def workers_table(report: dict[str, Any]) -> Table:
    table = Table(title="workers", title_justify="left")
    for name, right in (("WORKER", False), ("DEVICE", False), ("STATE", False), ("ALIVE", False)):
        table.add_column(name, justify="right" if right else "left")
    for name in ("FRAMES", "FPS", "FAILED", "GPU%", "MEM_MB", "TEMP_C", "POWER_W"):
        table.add_column(name, justify="right")
    for name, w in report["workers"].items():
        gpu = w.get("gpu", "cpu") != "cpu"
        table.add_row(
            name + (f"\n{w['reason']}" if w.get("reason") else ""),
            w.get("device", "?"),
            w.get("state", "?"),
            Text("yes", style="green") if w["alive"] else Text("no", style="red"),
            str(w["frames"]),
            str(w.get("fps", "0")),
            str(w["failed"]),
            *(
                str(w.get(f"gpu_{f}", "-")) if gpu else "-"
                for f in ("utilization_pct", "memory_used_mb", "temperature_c", "power_w")
            ),
        )
    return table


def view(report: dict[str, Any]) -> Group:
    parts: list[Any] = [
        Text(time.strftime("%H:%M:%S ") + "rtai status (Ctrl-C to quit)", style="bold"),
        streams_table(report),
        workers_table(report),
    ]
    if report["fleet"]:
        parts.append(Text("fleet: " + ", ".join(f"{k}={v}" for k, v in report["fleet"].items())))
    return Group(*parts)


def watch(client: redis.Redis, interval: float, *, console: Console | None = None) -> None:
    """Redraw the report every `interval` seconds until Ctrl-C."""
    with Live(view(status.collect(client)), console=console, auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval)
            live.update(view(status.collect(client)), refresh=True)
