"""Camera-list parsing (common.desired.parse_file), without Redis."""

from pathlib import Path

import pytest

from common.desired import parse_file
from common.errors import ConfigError

PATH = Path("/etc/rtai/cameras.yml")
URL = "redis://127.0.0.1:6379/0"


def test_entries_become_producer_settings_with_file_values():
    text = """
streams:
  - id: door
    source: rtsp://cam/1
    max_fps: 5
    model: rtai-shapes
  - id: 7
    source: demo
"""
    door, seven = parse_file(text, PATH, URL)
    assert (door.stream, door.source, door.max_fps, door.redis_url) == ("door", "rtsp://cam/1", 5.0, URL)
    assert seven.stream == "7"  # ids are names, even when YAML reads a number


@pytest.mark.parametrize("text", ["", "streams:", "streams: []", "# nothing yet\n"])
def test_an_empty_list_declares_nothing(text):
    assert parse_file(text, PATH, URL) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("streams: {door: x}", "'streams' must be a list"),
        ("streams:\n  - source: demo", "entry 0 needs an 'id' and a 'source'"),
        ("streams:\n  - door", "entry 0 needs an 'id'"),
        ("streams:\n  - {id: ok, source: demo}\n  - {id: 'a b', source: demo}", "entry 1 (a b): "),
        ("streams:\n  - {id: door, source: demo, max_fps: -1}", "entry 0 (door): "),
        ("streams:\n  - {id: door, source: demo, colour: red}", "colour"),
        ("streams:\n  - {id: door}", "source"),
        ("streams: [\n", "camera list /etc/rtai/cameras.yml: "),
    ],
)
def test_a_bad_entry_is_named_with_the_file(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_file(text, PATH, URL)
    assert str(caught.value).startswith(f"camera list {PATH}: ") and message in str(caught.value)
