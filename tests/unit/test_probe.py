"""A failed open's cause in words, from a real socket: refused, silent, an RTSP status, never the password."""

from __future__ import annotations

import socket
import threading

from producer.probe import why_not_open

from ..helpers import free_port


def test_refused_port_is_named():
    port = free_port()
    assert why_not_open(f"rtsp://127.0.0.1:{port}/s") == f"connection refused by 127.0.0.1:{port}"


def test_a_server_that_never_answers_is_named():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        why = why_not_open(f"rtsp://127.0.0.1:{port}/s", timeout_s=0.3)
    assert why == f"127.0.0.1:{port} accepts connections but does not answer RTSP"


def test_401_says_so_and_the_password_is_never_sent():
    seen: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                seen.append(conn.recv(4096))
                conn.sendall(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n")

        t = threading.Thread(target=answer)
        t.start()
        why = why_not_open(f"rtsp://admin:s3cret@127.0.0.1:{server.getsockname()[1]}/live", timeout_s=2)
        t.join(timeout=5)
    assert why == "RTSP 401 Unauthorized: wrong user or password?"
    assert b"DESCRIBE rtsp://127.0.0.1:" in seen[0] and b"s3cret" not in seen[0]
