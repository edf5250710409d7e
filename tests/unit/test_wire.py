import re

import msgpack
import numpy as np
import pytest

from common.errors import FrameDecodeError, SchemaError
from common.images import decode_frame, encode_frame, fit_size
from common.wire import (
    Batch,
    Frame,
    JobArgs,
    MsgpackSerializer,
    Result,
    decode_batch,
    decode_result,
    decode_result_boxes,
    encode_batch,
    encode_result,
    packb,
)


def _batch(**over) -> Batch:
    img = np.full((240, 320, 3), 90, np.uint8)
    frame = encode_frame(img, seq=7, t_capture=1.5, imgsz=320)
    fields = dict(stream="cam1", batch=3, model="rtai-shapes", conf=0.25, imgsz=320, t_enqueue=2.0, frames=[frame])
    fields.update(over)
    return Batch(**fields)


def test_batch_round_trip_keeps_every_field():
    b = _batch()
    assert decode_batch(encode_batch(b)) == b


def test_stream_precision_travels_with_the_batch():
    assert decode_batch(encode_batch(_batch(half=True))).half is True
    assert decode_batch(encode_batch(_batch())).half is None
    obj = msgpack.unpackb(encode_batch(_batch()))
    obj["half"] = "yes"
    with pytest.raises(SchemaError, match="field 'half' has type str"):
        decode_batch(packb(obj))


def _result(**over) -> Result:
    fields = dict(
        stream="cam1", seq=1, batch=0, t_capture=1.0, t_enqueue=1.25, t_start=1.5, t_done=2.0, worker="w1",
        gpu="cpu", model="rtai-shapes", w=640, h=480, boxes=[[1.0, 2.0, 3.0, 4.0, 0.9, 2]],
    )  # fmt: skip
    fields.update(over)
    return Result(**fields)


#: A result as workers packed it before the Result record: the wire bytes must not change.
LEGACY_RESULT = {
    "v": 1, "stream": "cam1", "seq": 1, "batch": 0, "t_capture": 1.0, "t_enqueue": 1.25, "t_start": 1.5,
    "t_done": 2.0, "worker": "w1", "gpu": "cpu", "model": "rtai-shapes", "w": 640, "h": 480,
    "boxes": [[1.0, 2.0, 3.0, 4.0, 0.9, 2]],
}  # fmt: skip


def test_result_encodes_to_the_same_bytes_as_before():
    data = encode_result(_result())
    assert data == packb(LEGACY_RESULT)  # same map, same field order: same bytes
    plain = msgpack.unpackb(data)  # any client decodes it without project code
    assert plain == LEGACY_RESULT


def test_result_round_trip_keeps_every_field():
    result = _result(boxes=[[1.5, 2, 3.0, 4.0, 0.5, 0], [0, 0, 10, 10, 1, 7]])
    assert decode_result(encode_result(result)) == result
    assert decode_result(encode_result(result)).latency_ms == 1000.0
    assert decode_result(encode_result(_result(boxes=[]))).boxes == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "unsupported version 2"),
        ({"seq": "1"}, "field 'seq' has type str"),
        ({"t_done": None}, "field 't_done' has type NoneType"),
        ({"worker": 3}, "field 'worker' has type int"),
        ({"gpu": None}, "field 'gpu' has type NoneType"),
        ({"w": 0}, "w=0 is outside"),
        ({"boxes": {"a": 1}}, "field 'boxes' has type dict"),
        ({"boxes": [[1, 2, 3, 4, 0.5]]}, "result box 0: expected [x1, y1, x2, y2, conf, cls]"),
        ({"boxes": [[1, 2, 3, 4, 0.5, 1.0]]}, "result box 0: class has type float"),
        ({"boxes": [[1, 2, "3", 4, 0.5, 1]]}, "result box 0: str where a number belongs"),
        ({"boxes": [[1, 2, 3, 4, True, 1]]}, "result box 0: bool where a number belongs"),
    ],
)
def test_result_decode_names_the_bad_field(change, message):
    with pytest.raises(SchemaError, match=re.escape(message)):
        decode_result(packb({**LEGACY_RESULT, **change}))


def test_result_decoded_with_boxes_as_one_array_keeps_the_fields_and_refuses_bad_boxes():
    result = _result(boxes=[[1.5, 2, 3.0, 4.0, 0.5, 0], [0, 0, 10, 10, 1, 7]])
    got, boxes = decode_result_boxes(encode_result(result))
    assert got == _result(boxes=[]) and boxes.tolist() == result.boxes
    assert decode_result_boxes(encode_result(_result(boxes=[])))[1].shape == (0, 6)
    for bad in ([[1, 2, 3, 4, 0.5]], [[1, 2, "3", 4, 0.5, 1]], [[1, 2, 3, 4, 0.5, 1.5]], [[1, 2], [1, 2, 3, 4, 5, 6]]):
        with pytest.raises(SchemaError, match="box"):
            decode_result_boxes(packb({**LEGACY_RESULT, "boxes": bad}))
    with pytest.raises(SchemaError, match="unsupported version 2"):
        decode_result_boxes(packb({**LEGACY_RESULT, "v": 2}))


@pytest.mark.parametrize("name", [n for n in LEGACY_RESULT if n != "v"])
def test_result_decode_refuses_a_missing_field(name):
    obj = {k: v for k, v in LEGACY_RESULT.items() if k != name}
    with pytest.raises(SchemaError, match=f"missing field '{name}'"):
        decode_result(packb(obj))


def test_result_decode_is_bounded():
    with pytest.raises(SchemaError, match="malformed msgpack"):
        decode_result(packb({**LEGACY_RESULT, "boxes": [[0, 0, 1, 1, 0.5, 0]] * 5000}))
    with pytest.raises(SchemaError, match="expected a map"):
        decode_result(packb([1, 2]))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1\xff\x00", "malformed msgpack"),
        (packb([1, 2, 3]), "expected a map"),
        (packb({"v": 99, "frames": []}), "unsupported version 99"),
        (packb({"v": 1}), "missing field 'frames'"),
    ],
)
def test_malformed_batches_raise_schema_error(payload, message):
    with pytest.raises(SchemaError, match=message):
        decode_batch(payload)


def _raw_batch(**frame_over) -> bytes:
    obj = msgpack.unpackb(encode_batch(_batch()))
    obj["frames"][0].update(frame_over)
    return packb(obj)


def test_absurd_dimensions_are_refused():
    with pytest.raises(SchemaError, match="w=100000 is outside"):
        decode_batch(_raw_batch(w=100000))


def test_wrong_field_type_is_named():
    with pytest.raises(SchemaError, match="field 'seq' has type str"):
        decode_batch(_raw_batch(seq="x"))


def test_decode_is_bounded():
    huge = packb({"v": 1, "frames": [{}] * 5000})
    with pytest.raises(SchemaError, match="malformed msgpack"):
        decode_batch(huge)


def test_rq_serializer_is_msgpack_not_pickle():
    job_tuple = ("worker.jobs.process_batch", None, [], {"stream": "cam1", "n": 4})
    assert MsgpackSerializer.loads(MsgpackSerializer.dumps(job_tuple)) == list(job_tuple)
    with pytest.raises(SchemaError):
        MsgpackSerializer.loads(b"\x80\x04\x95")  # a pickle header is not accepted


def test_fit_size_keeps_aspect_and_never_upscales():
    assert fit_size(1920, 1080, 320) == (320, 180)
    assert fit_size(200, 100, 320) == (200, 100)


def test_jpeg_and_raw_frames_decode_back():
    img = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    raw = encode_frame(img, seq=0, t_capture=0.0, imgsz=320, enc="raw")
    assert np.array_equal(decode_frame(raw), img)
    jpeg = encode_frame(img, seq=0, t_capture=0.0, imgsz=100, enc="jpeg")
    assert (jpeg.w, jpeg.h, jpeg.dw, jpeg.dh) == (200, 120, 100, 60)
    assert decode_frame(jpeg).shape == (60, 100, 3)


def test_broken_jpeg_gives_frame_decode_error():
    frame = encode_frame(np.zeros((50, 50, 3), np.uint8), seq=4, t_capture=0.0, imgsz=320)
    broken = type(frame)(**{**{k: getattr(frame, k) for k in frame.__slots__}, "data": b"\xff\xd8garbage"})
    with pytest.raises(FrameDecodeError, match="frame 4: JPEG data"):
        decode_frame(broken)


def _jpeg(w: int, h: int, *params: int) -> bytes:
    import cv2  # noqa: PLC0415

    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8), list(params))
    assert ok
    return buf.tobytes()


def test_jpeg_size_reads_the_header_of_baseline_progressive_and_exif_jpegs():
    import cv2  # noqa: PLC0415

    from common.images import jpeg_size  # noqa: PLC0415

    assert jpeg_size(_jpeg(64, 48)) == (64, 48)
    assert jpeg_size(_jpeg(64, 48, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)) == (64, 48)
    data = _jpeg(33, 17)
    exif = b"\xff\xe1" + (2 + 30).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(24)  # APP1 before the SOF
    assert jpeg_size(data[:2] + exif + data[2:]) == (33, 17)
    for bad in (b"", b"\x89PNG\r\n", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8 broken"):
        with pytest.raises(FrameDecodeError):
            jpeg_size(bad)


def _claiming(data: bytes, w: int, h: int) -> bytes:
    """The same JPEG with its start-of-frame header claiming w x h (a decompression bomb's header)."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9 :]


def test_a_jpeg_whose_header_claims_a_huge_image_is_refused_before_decoding():
    frame = encode_frame(np.full((48, 64, 3), 90, np.uint8), seq=1, t_capture=0.0, imgsz=320)
    bomb = Frame(**{**{f: getattr(frame, f) for f in Frame.__slots__}, "data": _claiming(frame.data, 16384, 16384)})
    with pytest.raises(FrameDecodeError, match="16384x16384, over the 16777216 pixel cap"):
        decode_frame(bomb)
    liar = Frame(**{**{f: getattr(frame, f) for f in Frame.__slots__}, "data": _claiming(frame.data, 640, 480)})
    with pytest.raises(FrameDecodeError, match="header says 640x480, payload says 64x48"):
        decode_frame(liar)


def test_decode_batch_caps_frame_and_batch_sizes():
    obj = msgpack.unpackb(encode_batch(_batch()))
    obj["frames"][0]["dw"] = 16384
    with pytest.raises(SchemaError, match="16384x240 is larger than the batch's imgsz 320"):
        decode_batch(packb(obj))
    obj["imgsz"] = 16384
    with pytest.raises(SchemaError, match="imgsz=16384 is outside 32..4096"):
        decode_batch(packb(obj))
    obj = msgpack.unpackb(encode_batch(_batch(imgsz=4096)))
    obj["frames"][0].update(dw=4096, dh=4096)
    obj["frames"] = obj["frames"] * 4  # 4 x 48 MiB decoded: under the cap
    decode_batch(packb(obj))
    obj["frames"] = obj["frames"] * 3  # 12 x 48 MiB: over it
    with pytest.raises(SchemaError, match="frames decode to 576 MiB, over the 512 MiB cap"):
        decode_batch(packb(obj))


def test_job_args_are_exactly_what_a_producer_sends():
    args = JobArgs.for_batch("cam1", 5, 4)
    assert JobArgs.from_kwargs(args.to_kwargs()) == args
    assert args.to_kwargs() == {"stream": "cam1", "batch": 5, "blob": "rtai:batch:cam1:5", "n": 4}
    bad = [
        ({}, "missing"),
        ({**args.to_kwargs(), "extra": 1}, "unexpected ['extra']"),
        ({**args.to_kwargs(), "blob": "rtai:ledger:cam2"}, "is not batch cam1#5's key"),
        ({**args.to_kwargs(), "stream": "cam/1"}, "stream id"),
        ({**args.to_kwargs(), "n": 0}, "n=0 is outside"),
        ({**args.to_kwargs(), "n": True}, "has type bool"),
        ({**args.to_kwargs(), "batch": -1, "blob": "rtai:batch:cam1:-1"}, "must not be negative"),
        (None, "expected a map"),
    ]
    for kwargs, reason in bad:
        with pytest.raises(SchemaError, match=re.escape(reason)):
            JobArgs.from_kwargs(kwargs)


def test_job_args_are_checked_on_the_producer_side_too():
    with pytest.raises(SchemaError, match="n=0 is outside"):
        JobArgs.for_batch("cam1", 5, 0)
    with pytest.raises(SchemaError, match="stream id"):
        JobArgs.for_batch("cam/1", 5, 4)
    with pytest.raises(SchemaError, match=re.escape("unexpected ['seq0']")):  # the unread field is gone
        JobArgs.from_kwargs({**JobArgs.for_batch("cam1", 5, 4).to_kwargs(), "seq0": 0})


def test_class_names_are_a_list_of_strings_or_a_schema_error():
    import msgpack  # noqa: PLC0415

    from common.errors import SchemaError  # noqa: PLC0415
    from common.wire import decode_names  # noqa: PLC0415

    assert decode_names(msgpack.packb(["circle", "square"])) == ["circle", "square"]
    for bad in (b"\xc1", msgpack.packb(5), msgpack.packb({"a": 1}), msgpack.packb(["circle", 3]), None):
        with pytest.raises(SchemaError):
            decode_names(bad)
