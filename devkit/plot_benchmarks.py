"""The docs' plot of the fleet beside Ultralytics' stream mode, drawn from the benchmark's own output.

    .venv/bin/python -m benchmarks.fleet_vs_stream --seconds 15 --export > /tmp/fvs.txt
    .venv/bin/python -m devkit.plot_benchmarks /tmp/fvs.txt      # writes docs/fleet-vs-ultralytics.png

It reads the markdown table `benchmarks.fleet_vs_stream` prints (one row per repetition, stream
count and imgsz) and draws results a second and p50 latency, fleet against Ultralytics, at each
stream count and imgsz (the mean over repetitions, each repetition as a dot).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^\| (?P<rep>\d+) \| (?P<streams>\d+) \| (?P<imgsz>\d+) \| (?P<flags>[^|]*) \| (?P<u_fps>[\d.]+) \| "
    r"(?P<u_p50>[\d.]+)/[\d.]+ \([^)]*\) \| (?P<f_fps>[\d.]+) \| (?P<f_p50>[\d.]+)/[\d.]+ \([^)]*\) \|"
)


def parse(text: str) -> dict[tuple[int, int], dict[str, list[float]]]:
    """(streams, imgsz) -> {u_fps, f_fps, u_p50, f_p50: one value per repetition}, default fleet flags only."""
    cells: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m and m["flags"].strip() == "defaults":
            cell = cells[(int(m["streams"]), int(m["imgsz"]))]
            for name in ("u_fps", "f_fps", "u_p50", "f_p50"):
                cell[name].append(float(m[name]))
    return dict(cells)


@click.command()
@click.argument("output", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "fleet-vs-ultralytics.png")
@click.option("--machine", default="2 CPU cores, no GPU", show_default=True, help="Said under the plot.")
def main(output: Path, out: Path, machine: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cells = parse(output.read_text())
    if not cells:
        raise click.ClickException(f"{output} holds no table rows of benchmarks.fleet_vs_stream")
    keys = sorted(cells, key=lambda k: (k[1], k[0]))
    labels = [f"{n} stream{'s' if n > 1 else ''}\nimgsz {imgsz}" for n, imgsz in keys]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("results a second (higher is better)", "fps"), ("p50 latency, ms (lower is better)", "p50"))
    for ax, (title, metric) in zip(axes, panels, strict=True):
        for offset, (who, colour, name) in enumerate(
            (("u", "#8d99ae", "Ultralytics stream mode"), ("f", "#2a9d8f", "realtime-ai fleet"))
        ):
            values = [cells[k][f"{who}_{metric}"] for k in keys]
            xs = [i + (offset - 0.5) * 0.38 for i in range(len(keys))]
            ax.bar(xs, [sum(v) / len(v) for v in values], width=0.36, color=colour, label=name)
            for x, v in zip(xs, values, strict=True):
                ax.scatter([x] * len(v), v, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(keys)), labels)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"The same RTSP cameras on the same box ({machine})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    click.echo(f"wrote {out} from {output}")


if __name__ == "__main__":
    main()
