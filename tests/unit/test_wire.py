import msgpack
import numpy as np
import pytest

from common.errors import FrameDecodeError, SchemaError
from common.images import decode_frame, encode_frame, fit_size
from common.wire import Batch, MsgpackSerializer, decode_batch, decode_result, encode_batch, encode_result, packb


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


def test_result_round_trip_is_plain_msgpack():
    data = encode_result(
        {"stream": "cam1", "seq": 1, "boxes": [[1.0, 2.0, 3.0, 4.0, 0.9, 2]], "t_capture": 1.0, "t_done": 2.0}
    )
    plain = msgpack.unpackb(data)  # any client decodes it without project code
    assert plain["boxes"] == [[1.0, 2.0, 3.0, 4.0, 0.9, 2]] and plain["v"] == 1
    assert decode_result(data)["seq"] == 1


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
