"""Attacks on the REST API with real processes: SSRF and file probing through stream_config.url, a
non-ASCII Authorization header, a tokenless public bind, declaring services without end, and a
stream id with a trailing newline."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from common import desired
from common.exitcodes import EXIT_CONFIG

from ..helpers import free_port, wait_for

P = "/api/v1/realtime-ai"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _start_api(procs, *args: str, env: dict[str, str] | None = None) -> str:
    port = free_port()
    proc = procs.rtai("api", "--port", str(port), *args, env=env, log=f"api{port}.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, procs.output(proc)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(up, timeout=30, what="rtai api listening")
    return base


def _call(base: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _start(base: str, url: str, protocol: str = "rtsp", **stream: object):
    body = {"stream_config": {"url": url, "protocol": protocol, **stream}, "model_settings": {"variant": "rtai-shapes"}}
    return _call(base, "POST", f"{P}/start", body)


def _url_error(resp_body: dict) -> str:
    errors = [e for e in resp_body["detail"] if e["loc"][-1] == "url" or "url" in e["msg"]]
    assert errors, resp_body
    return errors[0]["msg"]


@pytest.fixture
def metadata_server() -> Iterator[tuple[str, list[str]]]:
    """A fake cloud metadata service on 127.0.0.1 that records every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"iam-role-secret")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/latest/meta-data/iam", hits
    server.shutdown()
    server.server_close()


def test_ssrf_to_loopback_and_link_local_is_refused_unless_the_operator_allows_it(r, procs, metadata_server):
    target, hits = metadata_server
    procs.rtai("producer", log="daemon.log")  # a daemon that would fetch whatever gets declared
    base = _start_api(procs)
    for url in (target, "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/x", "http://localhost/x"):
        code, body = _start(base, url, "http")
        assert code == 422, body
        assert "RTAI_API_ALLOW_PRIVATE" in _url_error(body)
    code, body = _start(base, target.replace("http://", "rtsp://"), "http")
    assert code == 422 and "protocol http needs a http:// URL" in _url_error(body)
    assert desired.streams(r) == []

    # The same request on an API whose operator allowed 127.0.0.1 does reach the server: the
    # refusal above is what kept it away, not a broken fixture.
    allowed = _start_api(procs, env={"RTAI_API_ALLOW_PRIVATE": "127.0.0.1"})
    code, body = _start(allowed, target, "http", stream_id="allowed")
    assert code == 200, body
    wait_for(lambda: hits, timeout=30, what="the producer fetching the allowed URL")
    assert desired.streams(r) == ["allowed"]


def test_file_probing_gets_one_answer_for_missing_unreadable_and_present(procs, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes(b"x")
    (media / "folder.mp4").mkdir()
    base = _start_api(procs, env={"RTAI_MEDIA_ROOT": str(media)})
    outside = {path: _start(base, path, "file") for path in ("/etc/shadow", "/etc/no-such-file", "../../etc/shadow")}
    assert {code for code, _ in outside.values()} == {422}
    assert {_url_error(body) for _, body in outside.values()} == {
        "local files must be under the media root (RTAI_MEDIA_ROOT)"
    }
    inside = {name: _start(base, name, "file") for name in ("missing.mp4", "folder.mp4")}
    assert {code for code, _ in inside.values()} == {422}
    assert {_url_error(body).replace(repr(name), "NAME") for name, (_, body) in inside.items()} == {
        "no readable file NAME in the media root"
    }
    code, body = _start(base, "clip.mp4", "file", stream_id="clip")
    assert code == 200, body
    code, body = _start(base, "demo", "file", stream_id="demo")
    assert code == 200, body
    # Without a media root, no file at all
    bare = _start_api(procs)
    code, body = _start(bare, "/etc/passwd", "file")
    assert code == 422 and "RTAI_MEDIA_ROOT" in _url_error(body)


def _raw_get(port: int, path: str, header: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\nConnection: close\r\n\r\n"
        s.sendall(b"GET " + path.encode() + head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_non_ascii_authorization_header_is_401_not_500(r, procs):
    base = _start_api(procs, "--token", "s3cret")
    port = int(base.rsplit(":", 1)[1])
    for header in (b"Authorization: Bearer s3cr\xc3\xa9t", b"Authorization: Bearer \xff\xfe", b"Authorization: \xe9"):
        reply = _raw_get(port, f"{P}/services", header)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert _raw_get(port, f"{P}/services", b"Authorization: Bearer s3cret").startswith(b"HTTP/1.1 200")


def test_public_bind_without_a_token_refuses_to_start(procs):
    port = str(free_port())
    proc = procs.rtai("api", "--host", "0.0.0.0", "--port", port, env={"RTAI_API_TOKEN": ""})
    assert procs.finish(proc, timeout=30) == EXIT_CONFIG
    out = procs.output(proc)
    assert "refusing to serve the API on 0.0.0.0 without a token" in out and "--insecure" in out
    assert "Traceback" not in out

    insecure = procs.rtai("api", "--host", "0.0.0.0", "--port", port, "--insecure", env={"RTAI_API_TOKEN": ""})
    wait_for(lambda: _listening(int(port)), timeout=30, what="the --insecure API listening")
    assert "WARNING: rtai api serves 0.0.0.0" in procs.output(insecure)
    insecure.terminate()
    procs.finish(insecure, timeout=20)

    port = str(free_port())
    tokened = procs.rtai("api", "--host", "0.0.0.0", "--port", port, env={"RTAI_API_TOKEN": "t0ken"})
    wait_for(lambda: _listening(int(port)), timeout=30, what="the API with a token listening")
    assert "WARNING" not in procs.output(tokened)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_declared_services_are_capped(r, procs):
    base = _start_api(procs, env={"RTAI_MAX_SERVICES": "2"})
    assert _start(base, "demo", "file", stream_id="a")[0] == 200
    assert _start(base, "demo", "file", stream_id="b")[0] == 200
    code, body = _start(base, "demo", "file", stream_id="c")
    assert code == 429 and "RTAI_MAX_SERVICES" in body["detail"] and "2 services" in body["detail"]
    code, body = _start(base, "demo", "file")  # a generated id counts too
    assert code == 429
    assert _start(base, "demo", "file", stream_id="b", loop=True)[0] == 200, "updating a service is not a new one"
    assert desired.streams(r) == ["a", "b"] and desired.get(r, "b")["settings"]["loop"] is True
    assert _call(base, "POST", f"{P}/stop/a")[0] == 200
    assert _start(base, "demo", "file", stream_id="c")[0] == 200
    assert desired.streams(r) == ["b", "c"]


def test_stream_id_with_a_trailing_newline_is_refused_by_api_and_cli(r, procs):
    base = _start_api(procs)
    for bad in ("cam1\n", "cam1\r\n"):
        code, body = _start(base, "demo", "file", stream_id=bad)
        assert code == 422 and body["detail"][0]["loc"][-1] == "stream_id", body
    assert _call(base, "GET", f"{P}/status/cam1%0A")[0] == 404
    cli = procs.rtai("stream", "add", "cam1\n", "--source", "demo")
    assert procs.finish(cli, timeout=30) == EXIT_CONFIG
    assert "stream id 'cam1\\n' is not valid" in procs.output(cli)
    assert desired.streams(r) == [] and r.keys("*cam1*") == []
