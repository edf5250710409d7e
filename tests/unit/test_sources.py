"""The source-URL rules of the REST API and `redact`, without a server."""

from __future__ import annotations

import os

import pytest

from common import keys
from common.errors import ConfigError, SourceRefusedError
from common.sources import SourcePolicy, check_api_source, check_scheme, redact, redact_text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:S3cr3tPw@cam:554/live", "rtsp://admin:***@cam:554/live"),
        ("rtsp://:S3cr3tPw@cam/live", "rtsp://:***@cam/live"),
        ("rtsp://admin:p@ss:w@rd@10.0.0.5/s", "rtsp://admin:***@10.0.0.5/s"),
        ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),
        ("redis://:S3cr3tPw@bad:url", "redis://:***@bad:url"),
        ("http://cam/v.mjpg?user=a&password=S3cr3tPw&x=1", "http://cam/v.mjpg?user=a&password=***&x=1"),
        ("https://cam/s?TOKEN=S3cr3tPw#frag", "https://cam/s?TOKEN=***#frag"),
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("/media/clip.mp4", "/media/clip.mp4"),
        ("demo", "demo"),
    ],
)
def test_redact_hides_passwords_and_keeps_the_rest(url, shown):
    assert redact(url) == shown
    assert redact(shown) == shown


def test_redact_text_finds_urls_inside_messages():
    text = "cannot open rtsp://admin:S3cr3tPw@cam/live; gave up after 2 tries"
    assert redact_text(text) == "cannot open rtsp://admin:***@cam/live; gave up after 2 tries"


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("http://cam/x", "rtsp"),
        ("rtsp://cam/x", "http"),
        ("file:///etc/passwd", "rtsp"),
        ("/etc/passwd", "rtsp"),
        ("gopher://cam/x", "rtsp"),
        ("rtsp://cam/x", "file"),
        ("rtsp://cam/x y", "rtsp"),
        ("rtsp://cam/x\n", "rtsp"),
    ],
)
def test_scheme_must_match_protocol_and_the_allow_list(url, protocol):
    with pytest.raises(SourceRefusedError):
        check_scheme(url, protocol)


@pytest.mark.parametrize(
    ("url", "protocol"),
    [("rtsp://cam/x", "rtsp"), ("rtsps://cam/x", "rtsp"), ("HTTP://cam/x", "http"), ("rtmp://c/x", "rtmp")],
)
def test_allowed_schemes_pass(url, protocol):
    check_scheme(url, protocol)


def _resolver(table: dict[str, list[str]]):
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


DNS = _resolver(
    {
        "cam.example": ["93.184.216.34"],
        "metadata.internal": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"],
        "lan-cam": ["192.168.1.20"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://127.0.0.1:8554/x",
        "rtsp://127.1.2.3/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.internal/latest/meta-data/",
        "rtsp://[::1]/x",
        "rtsp://[::ffff:127.0.0.1]/x",
        "rtsp://[fe80::1]/x",
        "rtsp://0.0.0.0/x",
        "rtsp://mixed.example/x",
        "rtsp://lan-cam/x",
        "rtsp://10.0.0.5/x",
        "rtsp://100.64.0.1/x",
        "rtsp://224.0.0.1/x",
        "rtsp://93.184.216.34:pw@127.0.0.1/x",
        "rtsp://cam.example%2F@127.0.0.1/x",
        "rtsp://nowhere.invalid/x",
    ],
)
def test_non_global_hosts_are_refused_by_default(url):
    with pytest.raises(SourceRefusedError) as err:
        check_api_source(url, "http" if url.startswith("http") else "rtsp", SourcePolicy(), resolve=DNS)
    assert "pw" not in str(err.value)


def test_global_hosts_pass_and_the_url_is_kept_whole():
    url = "rtsp://admin:pw@cam.example:554/live"
    assert check_api_source(url, "rtsp", SourcePolicy(), resolve=DNS) == url
    assert check_api_source("rtsp://93.184.216.34/x", "rtsp", SourcePolicy(), resolve=DNS)


@pytest.mark.parametrize(
    ("allow", "url", "ok"),
    [
        ("all", "rtsp://127.0.0.1/x", True),
        ("1", "http://169.254.169.254/x", True),
        ("all", "rtsp://nowhere.invalid/x", True),
        ("private", "rtsp://lan-cam/x", True),
        ("private", "rtsp://127.0.0.1/x", False),
        ("private", "http://169.254.169.254/x", False),
        ("192.168.1.0/24", "rtsp://lan-cam/x", True),
        ("192.168.1.0/24", "rtsp://10.0.0.5/x", False),
        ("127.0.0.1, lan-cam", "rtsp://127.0.0.1/x", True),
        ("127.0.0.1, lan-cam", "rtsp://lan-cam/x", True),
        ("127.0.0.1", "rtsp://mixed.example/x", True),
        ("::1", "rtsp://[::1]/x", True),
        ("[::1]", "rtsp://[::1]/x", True),
    ],
)
def test_the_operator_allows_private_hosts(allow, url, ok):
    policy = SourcePolicy.parse(allow, None)
    protocol = "http" if url.startswith("http") else "rtsp"
    if ok:
        assert check_api_source(url, protocol, policy, resolve=DNS) == url
    else:
        with pytest.raises(SourceRefusedError, match="RTAI_API_ALLOW_PRIVATE"):
            check_api_source(url, protocol, policy, resolve=DNS)


def test_a_typo_in_the_allowed_networks_is_a_config_error():
    with pytest.raises(ConfigError, match="192.168.1.0/33"):
        SourcePolicy.parse("192.168.1.0/33", None)


def test_files_only_under_the_media_root_and_one_reason_for_missing_or_unreadable(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "escape").symlink_to("/etc")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    policy = SourcePolicy.parse(None, root)
    real = str((root / "clip.mp4").resolve())
    assert check_api_source("clip.mp4", "file", policy) == real
    assert check_api_source(real, "file", policy) == real
    assert check_api_source(f"file://{real}", "file", policy) == real
    assert check_api_source("demo", "file", policy) == "demo"
    for outside in ("../outside.mp4", str(tmp_path / "outside.mp4"), "/etc/shadow", "/etc/nope", "escape/passwd"):
        with pytest.raises(SourceRefusedError, match="^local files must be under the media root"):
            check_api_source(outside, "file", policy)
    reasons = set()
    for name in ("missing.mp4", "sub", "concat:/etc/a|/etc/b"):
        with pytest.raises(SourceRefusedError) as err:
            check_api_source(name, "file", policy)
        reasons.add(str(err.value).replace(repr(name), "NAME"))
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        (root / "locked.mp4").write_bytes(b"x")
        (root / "locked.mp4").chmod(0)
        with pytest.raises(SourceRefusedError) as err:
            check_api_source("locked.mp4", "file", policy)
        reasons.add(str(err.value).replace(repr("locked.mp4"), "NAME"))
    assert reasons == {"no readable file NAME in the media root"}


def test_no_media_root_means_no_files():
    with pytest.raises(SourceRefusedError, match="RTAI_MEDIA_ROOT"):
        check_api_source("/etc/passwd", "file", SourcePolicy())


@pytest.mark.parametrize("bad", ["cam1\n", "cam1\r\n", "\ncam1", "cam 1"])
def test_stream_ids_with_a_trailing_newline_are_refused(bad):
    with pytest.raises(ConfigError, match="stream id"):
        keys.check_stream_id(bad)
    assert keys.STREAM_ID_RE.match(bad) is None
