"""Why a live source did not open, in words: OpenCV says only that it failed (the cause goes to
FFmpeg's log), so on a failed open the producer asks the camera itself: a TCP connect, and for
rtsp:// one DESCRIBE (the request whose answer names a wrong path, 404, or a refused login, 401).

What it returns never holds the URL's password: it names the host and port, and the server's
status line (cut short, control characters dropped)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: A probe is one quick question; the open that failed already waited its timeout.
PROBE_TIMEOUT_S = 2.0
#: Of the server's status line, at most this much goes into the reason.
STATUS_CHARS = 80
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


def why_not_open(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The cause of a failed open of live `url` ('connection refused by 10.0.0.5:554', 'RTSP 404
    Not Found', ...), or '' when the probe found nothing wrong (the cause is in the stream itself)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "the URL's port is not a number"
    if not host or port is None:
        return ""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror:
        return f"cannot resolve host {host}"
    except ConnectionRefusedError:
        return f"connection refused by {where}"
    except TimeoutError:
        return f"no answer from {where} (timed out after {timeout_s:.0f} s)"
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    with sock:
        if scheme != "rtsp":
            return ""
        return _describe(sock, url, parts.password is not None, timeout_s)


def _describe(sock: socket.socket, url: str, has_login: bool, timeout_s: float) -> str:
    parts = urlsplit(url)
    # The request names the URL without its login: the probe never sends a password.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    target = parts._replace(netloc=netloc).geturl()
    request = f"DESCRIBE {target} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: rtai-probe\r\n\r\n"
    sock.settimeout(timeout_s)
    try:
        sock.sendall(request.encode("ascii", "replace"))
        head = sock.recv(1024)
    except TimeoutError:
        return f"{parts.hostname}:{parts.port or 554} accepts connections but does not answer RTSP"
    except OSError as exc:
        return f"RTSP request failed: {exc.strerror or exc}"
    line = head.split(b"\r\n", 1)[0].decode("ascii", "replace")
    line = "".join(ch for ch in line if ch.isprintable())[:STATUS_CHARS]
    fields = line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/"):
        return f"not an RTSP server (answered {line!r})" if line else "the server closed the connection"
    code = fields[1]
    if code == "200":
        return ""
    status = f"RTSP {code} {fields[2] if len(fields) > 2 else ''}".strip()
    if code == "401":
        return f"{status}: " + ("wrong user or password?" if has_login else "the camera wants a user and password")
    if code == "404":
        return f"{status}: no stream at this path"
    return status
