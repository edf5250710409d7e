"""A callback target for the forged-job tests: if a worker ever calls it, it leaves a file behind.

RQ calls success callbacks as f(job, connection, result) and failure callbacks as
f(job, connection, type, value, traceback); the marker path rides in the job's description.
"""

from __future__ import annotations

from pathlib import Path


def leave_mark(job: object, *_rest: object) -> None:
    Path(job.description).write_text("a forged callback ran")  # type: ignore[attr-defined]
