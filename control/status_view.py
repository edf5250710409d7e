"""`rtai status --watch`: the same report as `rtai status`, as rich tables redrawn in place.

The tables fit the terminal: below 120 columns the least needed columns go (in the order of
`_STREAM_DROP` / `_WORKER_DROP`), and a stream's reason is one line under the table, cut to the width.
"""

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
from common.shards import Shards

from . import status
from .printable import printable

#: Below this many columns the tables drop columns (all of them fit at 120).
FULL_WIDTH = 120
#: Stream columns, and the order in which they go as the terminal narrows (STREAM/STATE/PUB stay).
_STREAM_COLUMNS = ("PROD", "PUB", "DROP", "FAIL", "FLIGHT", "QUEUE", "FPS", "P50ms", "P99ms")
_STREAM_DROP = ("FLIGHT", "P50ms", "QUEUE", "FAIL")
_WORKER_COLUMNS = ("FRAMES", "FPS", "FAILED", "GPU%", "MEM_MB", "TEMP_C", "POWER_W")
_WORKER_DROP = ("POWER_W", "TEMP_C", "MEM_MB", "FAILED")
#: Columns each step below FULL_WIDTH removes per table, one step per this many terminal columns.
_STEP = 10
#: Longest stream or worker name shown whole in a narrow table.
_NAME_MAX = 24


def _num(value: object) -> str:
    return "-" if value is None else str(value)


def _kept(columns: tuple[str, ...], drop: tuple[str, ...], width: int) -> list[str]:
    steps = 0 if width >= FULL_WIDTH else min(len(drop), (FULL_WIDTH - width + _STEP - 1) // _STEP)
    gone = set(drop[:steps])
    return [c for c in columns if c not in gone]


def _name(name: str, width: int) -> str:
    return name if width >= FULL_WIDTH or len(name) <= _NAME_MAX else name[: _NAME_MAX - 1] + "…"


def streams_table(report: dict[str, Any], width: int = FULL_WIDTH) -> Table:
    table = Table(title="streams", title_justify="left", expand=False, padding=(0, 1 if width >= 90 else 0))
    table.add_column("STREAM", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    columns = _kept(_STREAM_COLUMNS, _STREAM_DROP, width)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for sid, s in report["streams"].items():
        led, lat = s["ledger"], s["latency_ms"]
        cells = {
            "PROD": str(led["produced"]),
            "PUB": str(led["published"]),
            "DROP": str(ledger.dropped(led)),
            "FAIL": str(led["failed"]),
            "FLIGHT": str(led["in_flight"]),
            "QUEUE": str(s["queue_depth"]),
            "FPS": str(s["fps_out"]),
            "P50ms": _num(lat["p50"]),
            "P99ms": _num(lat["p99"]),
        }
        state = Text(s["state"], style="red" if s["state"] in ("error", "stalled") else "")
        table.add_row(_name(sid, width), state, *(cells[c] for c in columns))
    return table


def stream_notes(report: dict[str, Any], width: int = FULL_WIDTH) -> list[Text]:
    """One line per note (reason, clock offset) under the streams table, cut to the width."""
    lines = []
    for sid, s in report["streams"].items():
        notes = [f"reason: {s['reason']}"] if s["reason"] else []
        if abs(s.get("clock_offset_s", 0.0)) > SKEW_WARN_S:
            notes.append(f"clock offset {s['clock_offset_s']:+.1f} s")
        for note in notes:
            line = Text(f"{sid}: {note}", style="dim", no_wrap=True, overflow="ellipsis")
            line.truncate(width, overflow="ellipsis")
            lines.append(line)
    return lines


def workers_table(report: dict[str, Any], width: int = FULL_WIDTH) -> Table:
    table = Table(title="workers", title_justify="left", padding=(0, 1 if width >= 90 else 0))
    for name in ("WORKER", "DEVICE", "STATE", "ALIVE"):
        table.add_column(name, no_wrap=True)
    columns = _kept(_WORKER_COLUMNS, _WORKER_DROP, width)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for name, w in report["workers"].items():
        gpu = w.get("gpu", "cpu") != "cpu"
        cells = {
            "FRAMES": str(w["frames"]),
            "FPS": str(w.get("fps", "0")),
            "FAILED": str(w["failed"]),
            **{
                col: str(w.get(f"gpu_{f}", "-")) if gpu else "-"
                for col, f in (
                    ("GPU%", "utilization_pct"),
                    ("MEM_MB", "memory_used_mb"),
                    ("TEMP_C", "temperature_c"),
                    ("POWER_W", "power_w"),
                )
            },
        }
        table.add_row(
            _name(name, width),
            w.get("device", "?"),
            w.get("state", "?"),
            Text("yes", style="green") if w["alive"] else Text("no", style="red"),
            *(cells[c] for c in columns),
        )
    return table


def worker_notes(report: dict[str, Any], width: int = FULL_WIDTH) -> list[Text]:
    lines = []
    for name, w in report["workers"].items():
        if w.get("reason"):
            line = Text(f"{name}: {w['reason']}", style="dim", no_wrap=True, overflow="ellipsis")
            line.truncate(width, overflow="ellipsis")
            lines.append(line)
    return lines


def view(report: dict[str, Any], width: int = FULL_WIDTH) -> Group:
    report = printable(report)
    parts: list[Any] = [
        Text(time.strftime("%H:%M:%S ") + "rtai status (Ctrl-C to quit)", style="bold"),
        streams_table(report, width),
        *stream_notes(report, width),
        workers_table(report, width),
        *worker_notes(report, width),
    ]
    if report["fleet"]:
        fleet = Text("fleet: " + ", ".join(f"{k}={v}" for k, v in report["fleet"].items()))
        parts.append(fleet)
    return Group(*parts)


def watch(client: redis.Redis | Shards, interval: float, *, console: Console | None = None) -> None:
    """Redraw the report every `interval` seconds until Ctrl-C, fitted to the terminal's width."""
    console = console or Console()

    def current() -> Group:
        return view(status.collect(client), console.width)

    with Live(current(), console=console, auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval)
            live.update(current(), refresh=True)
