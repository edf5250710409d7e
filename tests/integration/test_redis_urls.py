"""Wrong Redis URLs: a process that never reached Redis exits within seconds, saying what is wrong.

Real redis-servers (one with a password, one TLS-only) and real `rtai` processes; each case checks
the exit code, the message and the time it took, and that no password shows up in the output.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.exitcodes import EXIT_REDIS
from control.redis_server import PrivateRedis

from ..helpers import Procs, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PASSWORD = "s3cret-PLANTED"
WRONG = "wr0ng-PLANTED"
#: The issue's bound: a wrong URL is reported within seconds.
MAX_EXIT_S = 10.0


def _cert(path: Path, name: str) -> tuple[Path, Path]:
    cert, key = path / f"{name}.pem", path / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("certs")
    cert, key = _cert(tmp, "server")
    other, _ = _cert(tmp, "other")
    plain = PrivateRedis(password=PASSWORD)
    tls = PrivateRedis(tls=(cert, key))
    yield {"plain": plain.port, "tls": tls.port, "cert": cert, "other": other}
    plain.stop()
    tls.stop()


def _url(case: str, s: dict[str, object]) -> str:
    plain, tls = s["plain"], s["tls"]
    return {
        "nothing": f"redis://127.0.0.1:{free_port()}/0",
        "plain_to_tls": f"redis://127.0.0.1:{tls}/0",
        "tls_to_plain": f"rediss://:{PASSWORD}@127.0.0.1:{plain}/0?ssl_cert_reqs=required&ssl_ca_certs={s['cert']}",
        "bad_certificate": f"rediss://127.0.0.1:{tls}/0?ssl_cert_reqs=required&ssl_ca_certs={s['other']}",
        "no_password": f"redis://127.0.0.1:{plain}/0",
        "wrong_password": f"redis://:{WRONG}@127.0.0.1:{plain}/0",
    }[case]


EXPECTED = {
    "nothing": "nothing listens at 127.0.0.1:",
    "plain_to_tls": "speaks TLS: use rediss://",
    "tls_to_plain": "is not TLS (use redis://)",
    "bad_certificate": "certificate verify failed",
    "no_password": "needs a password",
    "wrong_password": "refused the password",
}

COMMANDS = {
    "worker": ("worker", "--detector", "sleep", "--preload", ""),
    "supervisor": ("worker", "--workers", "2", "--detector", "sleep", "--preload", ""),
    "producer": ("producer", "--source", "demo", "--stream", "cam1", "--max-frames", "4"),
    "status": ("status",),
    "api": ("api", "--port", "0"),
}


#: Every case against `status` and the worker; the other roles reach Redis through the same check
#: (common/redis_client.py), so each is run against one URL nothing listens at and one refused password.
RUNS = [(case, command) for command in ("status", "worker") for case in sorted(EXPECTED)] + [
    (case, command) for command in ("supervisor", "producer", "api") for case in ("nothing", "wrong_password")
]


@pytest.mark.parametrize(("case", "command"), RUNS)
def test_wrong_url_exits_fast_and_says_why(servers, tmp_path, case, command):
    url = _url(case, servers)
    procs = Procs(url, tmp_path)
    try:
        t0 = time.monotonic()
        proc = procs.rtai(*COMMANDS[command])
        code = procs.finish(proc, timeout=30)
        elapsed = time.monotonic() - t0
        out = procs.output(proc)
        assert code == EXIT_REDIS, out
        assert EXPECTED[case] in out, out
        assert elapsed < MAX_EXIT_S, f"{command} took {elapsed:.1f} s to give up on {case}"
        assert "Traceback" not in out, out
        assert PASSWORD not in out and WRONG not in out, "a password leaked into the message"
    finally:
        procs.close()


def test_a_sentinel_url_no_sentinel_answers_for_names_the_service_and_the_sentinels(tmp_path):
    """No sentinel answers (nothing listens at either): the message names the service and the
    sentinels it asked, with no `?:?` and no redis-py object dump, and asks the right questions."""
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/rtai/0"
    procs = Procs(url, tmp_path)
    try:
        proc = procs.rtai("status", env={"RTAI_REDIS_START_TIMEOUT_S": "2"})
        assert procs.finish(proc, timeout=30) == EXIT_REDIS
        out = procs.output(proc)
        sentinels = f"127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}"
        assert f"no sentinel names a master for 'rtai' (sentinels {sentinels}; waited 2 s)" in out, out
        assert "?:?" not in out and "<redis." not in out and PASSWORD not in out, out
    finally:
        procs.close()
