"""Result decoding refuses boxes a worker never writes: non-finite or out-of-range numbers, in both decoders."""

from __future__ import annotations

import pytest

from common.errors import SchemaError
from common.wire import decode_result, decode_result_boxes, packb, unpackb
from devkit.results import encoded_result

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "box",
    [
        [1.0, 2.0, 3.0, 4.0, 0.5, INF],
        [1.0, 2.0, 3.0, 4.0, 0.5, 3.4e38],
        [1.0, -INF, 3.0, 4.0, 0.5, 0],
        [1.0, 2.0, 1e300, 4.0, 0.5, 0],
        [1.0, 2.0, 3.0, 4.0, NAN, 0],
        [1.0, 2.0, 3.0, 4.0, 0.5, -1],
    ],
)
def test_a_poison_box_is_a_schema_error(box):
    message = unpackb(encoded_result("s", 1, [], w=640, h=480, model="m"))
    message["boxes"] = [[10.0, 10.0, 20.0, 20.0, 0.9, 0], box]
    for decode in (decode_result, decode_result_boxes):
        with pytest.raises(SchemaError):
            decode(packb(message))


def test_a_non_finite_time_is_a_schema_error():
    message = unpackb(encoded_result("s", 1, [[1, 2, 3, 4, 0.5, 0]], w=640, h=480, model="m"))
    message["t_capture"] = INF
    with pytest.raises(SchemaError, match="t_capture"):
        decode_result_boxes(packb(message))
