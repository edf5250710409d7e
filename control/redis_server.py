"""A redis-server of our own: loopback only, persistence off, removed on stop.

`rtai up` runs one when RTAI_REDIS_URL is unset; the tests and benchmarks run theirs the same way.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from common import parentdeath
from common.backoff import Backoff
from common.errors import RedisUnavailableError, RtaiError

#: A local redis-server answers within a second; ten allows for a loaded machine.
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
        extra_args: tuple[str, ...] = (),
        data_dir: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """tls: (certificate, key) files; the server then speaks TLS only, and `url` is rediss://
        with the certificate as its CA. extra_args go last, so they override the defaults (e.g.
        `--appendonly yes`); data_dir (kept on stop) replaces the temporary directory.
        die_with_parent: the server stops when this process dies, even by SIGKILL (create it on the
        main thread: the kernel tells the child when the thread that started it ends)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RtaiError(
                "redis-server not found. Install it (`sudo apt-get install redis-server`), point "
                "RTAI_REDIS_URL at a running Redis, or use `docker compose up`."
            )
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.dir = tempfile.mkdtemp(prefix="rtai-redis-") if data_dir is None else str(data_dir)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
        ]
        if password:
            args += ["--requirepass", password]
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        if tls is not None:
            cert, key = tls
            args[1:3] = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(cert),
                "--tls-auth-clients",
                "no",
            ]
            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        args += list(extra_args)
        hook = parentdeath.die_with_parent() if die_with_parent else None
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=hook)
        self._wait_up()

    def _wait_up(self) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        backoff = Backoff(first=0.01, cap=0.2)  # redis-server answers within tens of ms
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RedisUnavailableError(f"redis-server on port {self.port} did not start: {exc}") from exc
                time.sleep(backoff.next())
            finally:
                client.close()

    def kill(self) -> None:
        """Stop it hard (SIGKILL), keeping its port for a restart."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
