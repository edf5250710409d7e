"""The live view's push endpoint against a real `rtai api`: a bad event-log entry does not break a stream page;
the live cookie is Secure over TLS and expires."""

from __future__ import annotations

import json
import time

import httpx
from fastapi.testclient import TestClient

from common import keys

from ..helpers import free_port, wait_for

P = "/api/v1/realtime-ai"


def _api(procs, env: dict[str, str] | None = None) -> str:
    port = free_port()
    procs.rtai("api", "--port", str(port), env=env, log=f"api{port}.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/static/app.js", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, what="rtai api serving")
    return base


def test_a_stream_page_opens_with_its_events_past_a_bad_event_log_entry(r, procs):
    good = {"type": "enter", "stream": "cam", "zone": "door", "track": 3, "t": 1.0}
    r.xadd(keys.EVENT_LOG, {"e": json.dumps(good)})
    r.xadd(keys.EVENT_LOG, {"e": b"\xff not json"})  # newer than the good one: read first
    base = _api(procs)
    with httpx.stream("GET", f"{base}{P}/live", params={"stream": "cam"}, timeout=10) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        for line in lines:  # "retry: 1000", then the stream's recent events (main: the connection broke here)
            if line == "event: events":
                data = next(lines)
                break
        else:
            raise AssertionError("the stream page got no events: the connection ended")
    assert json.loads(data.removeprefix("data: ")) == [good]


def _flags(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [part.strip().lower() for part in resp.headers["set-cookie"].split(";")]


def test_the_live_cookie_is_secure_over_tls_and_expires(redis_server, procs):
    from control.api.app import create_app  # noqa: PLC0415
    from control.api.routers.live import COOKIE, COOKIE_MAX_AGE_S, cookie_value  # noqa: PLC0415

    base = _api(procs, env={"RTAI_API_TOKEN": "s3cret"})
    auth = {"Authorization": "Bearer s3cret"}
    plain = httpx.post(f"{base}{P}/live/session", headers=auth)
    assert "secure" not in _flags(plain)  # plain http: a Secure cookie would never come back
    assert f"max-age={COOKIE_MAX_AGE_S}" in _flags(plain)
    proxied = httpx.post(f"{base}{P}/live/session", headers={**auth, "X-Forwarded-Proto": "https"})
    assert "secure" in _flags(proxied)  # behind a TLS-terminating proxy
    direct_tls = TestClient(create_app(redis_server, token="s3cret"), base_url="https://testserver")
    assert "secure" in _flags(direct_tls.post(f"{P}/live/session", headers=auth))  # type: ignore[arg-type]

    def opens(cookie: str) -> int:
        with httpx.stream("GET", f"{base}{P}/live", cookies={COOKIE: cookie}, timeout=10) as resp:
            return resp.status_code

    assert opens(plain.cookies[COOKIE]) == 200
    now = int(time.time())
    assert opens(cookie_value("s3cret", issued=now - COOKIE_MAX_AGE_S - 5)) == 401  # a copied cookie, past its age
    assert opens(cookie_value("s3cret", issued=now + 3600)) == 401  # issued in the future
    assert opens(cookie_value("another token")) == 401  # the token changed: every cookie is revoked
