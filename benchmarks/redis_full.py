"""Redis-full recovery: fill a private Redis (`maxmemory`, `noeviction`) under a running fleet
(a producer on the demo clip, a supervisor with two sleep-detector workers) for several seconds,
free it, and time until results flow again; count frames refused and frames unaccounted for.

.venv/bin/python -m benchmarks.redis_full --runs 3
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import click

from tests.chaos.test_redis_full import run_redis_full


@click.command()
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--full-s", type=float, default=6.0, show_default=True, help="How long Redis stays full.")
def main(runs: int, full_s: float) -> None:
    figures = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="rtai-redis-full-") as tmp:
            f = run_redis_full(Path(tmp), full_s=full_s)
        figures.append(f)
        click.echo(f"run {i + 1}: {json.dumps(f)}", err=True)
    rec = [f["recovery_s"] for f in figures]
    click.echo(
        json.dumps(
            {
                "runs": runs,
                "full_s": full_s,
                "recovery_s_median": round(statistics.median(rec), 2),
                "recovery_s_max": round(max(rec), 2),
                "dropped_redis_full": [f["dropped_redis_full"] for f in figures],
                "unaccounted": sum(f["unaccounted"] for f in figures),
            }
        )
    )


if __name__ == "__main__":
    main()
