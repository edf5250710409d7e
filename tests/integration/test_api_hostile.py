"""The API under hostile clients, with a real `rtai api` process and raw sockets: a large body
without a token, half-sent requests (slowloris), too many connections, cross-origin writes and a
rebinding Host name."""

from __future__ import annotations

import json
import socket
import time

import psutil
import pytest

from common import desired

from ..helpers import wait_for
from .test_api_security import _call, _start_api

P = "/api/v1/realtime-ai"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
BODY = {"stream_config": {"url": "demo", "protocol": "file"}, "model_settings": {"variant": "rtai-shapes"}}


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _head(port: int, head: bytes, timeout: float = 3) -> tuple[socket.socket, bytes]:
    """Send `head` and read what the server answers within `timeout` (b"" if nothing)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    reply = b""
    try:
        while chunk := s.recv(65536):  # the refusals close the connection
            reply += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return s, reply


def _rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (proc, *proc.children(recursive=True)))


def test_large_body_is_refused_before_it_is_read(r, procs):
    base = _start_api(procs, "--token", "s3cret")
    port, api_pid = _port(base), procs.procs[-1].pid
    auth = {"Authorization": "Bearer s3cret"}
    assert _call(base, "GET", f"{P}/services", headers=auth)[0] == 200
    rss_before = _rss(api_pid)

    # No token, 50 MB announced: the 401 comes from the headers alone, while the body is unsent.
    big = b"POST " + P.encode() + b"/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    hold, reply = _head(port, big + b"Content-Length: 52428800\r\n\r\n" + b"{" * 65536)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    # With the token, a body over the limit is 413 at once, from Content-Length.
    sock, reply = _head(port, big + b"Authorization: Bearer s3cret\r\nContent-Length: 52428800\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413") and b"RTAI_API_MAX_BODY_BYTES" in reply, reply[:300]
    sock.close()
    # Chunked (no Content-Length): refused once the bytes read pass the limit, not at the end
    # (the last chunk is never sent).
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sock, reply = _head(port, big + b"Authorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 17)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    sock.close()
    # Meanwhile another client is answered at once, and the API did not grow.
    t0 = time.monotonic()
    assert _call(base, "GET", f"{P}/services", headers=auth)[0] == 200
    assert time.monotonic() - t0 < 1.0
    assert _rss(api_pid) - rss_before < 20 * 2**20
    hold.close()
    # The guide's body still starts a service.
    assert _call(base, "POST", f"{P}/start", BODY, headers=auth)[0] == 200


def test_half_sent_requests_are_closed_after_the_header_timeout(procs):
    base = _start_api(procs, env={"RTAI_API_HEADER_TIMEOUT_S": "1"})
    port = _port(base)
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET " + P.encode() + b"/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(s)
    assert _call(base, "GET", f"{P}/services")[0] == 200  # answered while they hang

    def all_closed() -> bool:
        for s in slow:
            s.settimeout(0.01)
            try:
                if s.recv(1) != b"":
                    return False
            except TimeoutError:
                return False
            except ConnectionResetError:
                pass
        return True

    wait_for(all_closed, timeout=10, what="the server closing 50 half-sent requests")
    for s in slow:
        s.close()
    # A body that trickles in is cut off at the same deadline (408), and the API still answers.
    sock, reply = _head(port, b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{", timeout=5)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    sock.close()
    assert _call(base, "GET", f"{P}/services")[0] == 200


def test_over_the_cap_the_slowest_connection_makes_room(procs):
    base = _start_api(procs, env={"RTAI_API_MAX_CONNECTIONS": "10", "RTAI_API_HEADER_TIMEOUT_S": "60"})
    port = _port(base)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    # Ten idle sockets hold every slot; a client that sends its request at once still gets in.
    for _ in range(3):
        assert _call(base, "GET", f"{P}/services")[0] == 200

    def closed(s: socket.socket) -> bool:
        s.settimeout(0.01)
        try:
            return s.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    wait_for(lambda: closed(held[0]), timeout=10, what="the oldest idle socket evicted")
    assert not any(closed(s) for s in held[1:]), "one eviction made room for all three calls, one at a time"
    for s in held:
        s.close()


def _raw(port: int, method: str, path: str, headers: dict[str, str], body: dict | None = None) -> tuple[int, dict]:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {len(data)}", "Content-Type: application/json", "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode() + data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload or b"{}")


def test_cross_origin_writes_and_rebinding_hosts_are_refused(r, procs):
    base = _start_api(procs, env={"RTAI_API_ALLOWED_HOSTS": "cams.example"})
    port = _port(base)
    here = f"127.0.0.1:{port}"
    victim = {**BODY, "stream_config": {**BODY["stream_config"], "stream_id": "victim"}}
    assert _call(base, "POST", f"{P}/start", victim)[0] == 200

    # A page on another origin (fetch with mode no-cors sends its Origin) cannot stop the stream.
    code, body = _raw(port, "POST", f"{P}/stop/victim", {"Host": here, "Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in body["detail"], body
    code, body = _raw(port, "POST", f"{P}/stop/victim", {"Host": here, "Origin": "null"})
    assert code == 403, body
    code, body = _raw(port, "POST", f"{P}/stop/victim", {"Host": here, "Sec-Fetch-Site": "cross-site"})
    assert code == 403, body
    # A rebinding name that resolves to 127.0.0.1 reads nothing and starts nothing.
    rebound = f"rebind.evil.example:{port}"
    code, body = _raw(port, "GET", f"{P}/services", {"Host": rebound})
    assert code == 421 and "RTAI_API_ALLOWED_HOSTS" in body["detail"], body
    code, _ = _raw(port, "POST", f"{P}/start", {"Host": rebound, "Origin": f"http://{rebound}"}, BODY)
    assert code == 421
    assert desired.streams(r) == ["victim"]

    # The page's own same-origin fetch, a listed name, and a client that is not a browser all pass.
    assert _raw(port, "GET", f"{P}/services", {"Host": f"cams.example:{port}"})[0] == 200
    assert _raw(port, "GET", f"{P}/services", {"Host": f"localhost:{port}"})[0] == 200
    page = {"Host": here, "Origin": f"http://{here}", "Sec-Fetch-Site": "same-origin"}
    code, body = _raw(port, "POST", f"{P}/stop/victim", page)
    assert code == 200, body
    assert desired.streams(r) == []
    assert _raw(port, "POST", f"{P}/start", {"Host": here}, BODY)[0] == 200


def test_allowed_host_flag_and_star(procs):
    listed = _port(_start_api(procs, "--allowed-host", "nvr.lan", "--allowed-host", "cams.example"))
    assert _raw(listed, "GET", f"{P}/services", {"Host": "nvr.lan"})[0] == 200
    assert _raw(listed, "GET", f"{P}/services", {"Host": "other.example"})[0] == 421
    anything = _port(_start_api(procs, "--allowed-host", "*"))
    assert _raw(anything, "GET", f"{P}/services", {"Host": "other.example"})[0] == 200
