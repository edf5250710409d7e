"""Container healthchecks, as docker-compose.yml runs them: `python -m control.health ROLE [PORT]`.

Exit 0 when healthy, 1 with the reason on stderr otherwise. Roles:
- `worker`: a worker of this host (its name starts with the host name) holds a live lease;
- `api`: the API on this host answers its page on PORT (default 2000);
- `redis` (and any role that only needs Redis: producer, tracker, sink): Redis answers PING.
"""

from __future__ import annotations

import http.client
import sys

import redis

from common import keys
from common.config import explicit_redis_url, host_name
from common.redis_client import connect

#: A healthcheck must answer within the container runtime's timeout (compose gives it 5 s).
TIMEOUT_S = 3.0


def redis_problem(client: redis.Redis) -> str | None:
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis does not answer: {exc}"
    return None


def worker_problem(client: redis.Redis, host: str) -> str | None:
    """None when a worker named `host:...` has a live lease (the key expires with its lease)."""
    for name in client.smembers(keys.WORKERS):
        text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        if text.startswith(host + ":") and client.exists(keys.worker_alive(text)):
            return None
    return f"no worker of host {host} holds a live lease"


def api_problem(port: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"the API on port {port} does not answer: {exc}"
    finally:
        conn.close()
    return None if status == 200 else f"the API on port {port} answered {status}"


def problem(role: str, *, port: int = 2000) -> str | None:
    if role == "api":
        return api_problem(port)
    client = connect(explicit_redis_url() or "redis://localhost:6379/0", check=False)
    try:
        return redis_problem(client) or (worker_problem(client, host_name()) if role == "worker" else None)
    finally:
        client.close()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m control.health worker|api [PORT]|redis|producer|tracker|sink", file=sys.stderr)
        return 2
    found = problem(argv[0], port=int(argv[1]) if len(argv) > 1 else 2000)
    if found:
        print(found, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
