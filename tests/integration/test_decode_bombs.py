"""Decompression bombs against a real worker: JPEG frames whose headers claim 16384x16384 are
refused before decoding (counted failed, with the size in the reason), the worker's memory stays
flat, and it goes on to the next batch."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import msgpack
import psutil
import pytest
from rq import Queue

from common import keys
from common.wire import MsgpackSerializer, packb

from ..helpers import wait_for
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(90)

#: Decoding one of the bombs would take 16384 x 16384 x 3 = 768 MiB.
GROWTH_LIMIT_MB = 300


def _claiming(data: bytes, w: int, h: int) -> bytes:
    """The same small JPEG with its start-of-frame header claiming w x h."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9 :]


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (Linux VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def _reasons(r, stream: str) -> str:
    q = Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
    jobs = [q.fetch_job(i) for i in q.failed_job_registry.get_job_ids()]
    return "\n".join(j.latest_result().exc_string for j in jobs)


def test_jpeg_bombs_are_refused_before_decoding_and_memory_stays_flat(r, procs):
    proc = procs.rtai("worker", "--detector", "sleep", "--sleep-ms", "20", "--preload", "")
    s = sink(r, "cam1")
    assert s.push(frames(2))
    wait_for(lambda: counts(r, "cam1")["published"] == 2, timeout=30, what="a first good batch")
    before = _peak_rss_mb(proc.pid)
    rss_before = psutil.Process(proc.pid).memory_info().rss / 2**20

    # The worker waits (SIGSTOP) while the bombs are queued: batches 3 and 4 are rewritten after their
    # push, and a worker idle beside them could take one first (it did under load).
    proc.send_signal(signal.SIGSTOP)
    # Batch 2: two frames that say 64x48 in the payload, with JPEG headers claiming 16384x16384.
    liars = [replace(f, data=_claiming(f.data, 16384, 16384)) for f in frames(2)]
    assert s.push(liars)
    # Batch 3: the payload admits 16384x16384 (and, batch 4, an imgsz to match).
    for batch, imgsz in ((3, 320), (4, 16384)):
        assert s.push(frames(2))
        obj = msgpack.unpackb(r.get(keys.batch_blob("cam1", batch)))
        obj["imgsz"] = imgsz
        for fr in obj["frames"]:
            fr.update(dw=16384, dh=16384, data=_claiming(fr["data"], 16384, 16384))
        r.set(keys.batch_blob("cam1", batch), packb(obj))
    assert s.push(frames(4))  # a good batch after the bombs
    proc.send_signal(signal.SIGCONT)

    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=30, what="every frame accounted for")
    c = counts(r, "cam1")
    assert (c["produced"], c["published"], c["failed"]) == (2 + 2 + 2 + 2 + 4, 2 + 4, 6), c
    reasons = _reasons(r, "cam1")
    assert "JPEG header says 16384x16384, over the 16777216 pixel cap; not decoded" in reasons
    assert "16384x16384 is larger than the batch's imgsz 320" in reasons
    assert "imgsz=16384 is outside 32..4096" in reasons
    grown = _peak_rss_mb(proc.pid) - before
    rss_after = psutil.Process(proc.pid).memory_info().rss / 2**20
    print(f"\nworker peak RSS grew {grown:.0f} MiB (RSS {rss_before:.0f} -> {rss_after:.0f} MiB)")
    assert grown < GROWTH_LIMIT_MB, f"the worker's peak RSS grew by {grown:.0f} MiB"
    assert proc.poll() is None, "the worker died"
