"""`rtai worker`: one worker process, or a supervisor of one per GPU (--all-gpus) / N CPU workers."""

from __future__ import annotations

import logging
import sys

import click

from common import gpu
from common.config import WorkerSettings, apply_worker_thread_env, build, visible_cuda_devices

log = logging.getLogger(__name__)


@click.command()
@click.option("--device", default=None, help="cpu or cuda:N (default cpu) [env RTAI_DEVICE].")
@click.option("--all-gpus", is_flag=True, help="One supervised process per visible GPU.")
@click.option(
    "--workers", "n_workers", type=int, default=None, help="Supervise N CPU worker processes (without --all-gpus)."
)
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--name", default=None, help="Worker name (default host:device:pid).")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--half/--no-half", default=None, help="FP16 (default on for CUDA).")
@click.option("--max-frame-age-ms", type=int, default=None, help="Drop older frames at dequeue.")
@click.option(
    "--detector",
    type=click.Choice(["yolo", "noop", "sleep"]),
    default=None,
    help="yolo, or noop/sleep for transport and scaling benchmarks.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "torch", "tensor", "onnx", "tensorrt", "ultralytics"]),
    default=None,
    help="Inference engine: auto (exported TensorRT/ONNX engine when one fits, else torch) [env RTAI_ENGINE].",
)
@click.option("--engine-batch", type=int, default=None, help="Batch of the exported engine to use (default 8).")
@click.option("--sleep-ms", type=float, default=None, help="Per-frame cost of the sleep detector.")
@click.option(
    "--preload",
    multiple=True,
    default=("rtai-shapes",),
    show_default=True,
    help="Models to load before taking jobs (repeatable; '' for none).",
)
@click.option(
    "--max-batch-frames",
    type=int,
    default=None,
    help="With a backlog, run queued jobs together in one detector call up to this many frames (default 8).",
)
@click.option(
    "--prefetch",
    type=click.Choice(["auto", "off", "settle", "detect"]),
    default=None,
    help="Take and decode the next jobs while this group settles (settle) or from the start of its detector "
    "call (detect), or not at all (off); auto (default): settle on CUDA, off on the CPU.",
)
@click.option("--burst", is_flag=True, default=None, help="Exit when the queues are empty.")
@click.option("--max-jobs", type=int, default=None, help="Exit after N jobs.")
@click.option("--fault-point", default=None, hidden=True, help="Chaos tests: SIGKILL self at this point.")
@click.option(
    "--fault-batch", default=None, hidden=True, help="Chaos tests: SIGKILL self on every run of batch STREAM#N."
)
def worker(all_gpus: bool, n_workers: int | None, preload: tuple[str, ...], **flags: object) -> None:
    """Run detection jobs (one process, or one per GPU with --all-gpus)."""
    apply_worker_thread_env()  # before torch loads, here and in supervised children
    settings = build(WorkerSettings, **flags)
    preload = tuple(p for p in preload if p)
    if settings.detector != "yolo":
        preload = ()
    if all_gpus or n_workers:
        from .supervisor import Supervisor, cpu_slots, gpu_slots  # noqa: PLC0415

        slots = gpu_slots(visible_cuda_devices(), gpu.count()) if all_gpus else []
        if not slots:
            if all_gpus:
                log.warning("no GPU visible: running CPU worker(s) instead")
            slots = cpu_slots(n_workers or 1)
        child_args = _child_args(settings, preload)
        if settings.threads is None and all(slot.device == "cpu" for slot in slots):
            from .threads import default_threads  # noqa: PLC0415

            # N CPU workers share the cores this process was given.
            child_args += ["--threads", str(default_threads(len(slots)))]
        sup = Supervisor(
            slots, redis_url=settings.redis_url, child_args=child_args, restart_budget=settings.restart_budget
        )
        sys.exit(sup.run())
    from .process import run  # noqa: PLC0415

    run(settings, preload=preload)


def _child_args(settings: WorkerSettings, preload: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for field in (
        "threads",
        "max_frame_age_ms",
        "detector",
        "sleep_ms",
        "fault_point",
        "fault_batch",
        "max_jobs",
        "max_batch_frames",
        "prefetch",
    ):
        value = getattr(settings, field)
        if value is not None and value != WorkerSettings.model_fields[field].default:
            args += [f"--{field.replace('_', '-')}", str(value)]
    if settings.half is not None:
        args.append("--half" if settings.half else "--no-half")
    for p in preload:
        args += ["--preload", p]
    if not preload:
        args += ["--preload", ""]
    return args
