"""Bodies and pages a hostile or careless client meets: NaN and Infinity, class names the model does
not have, the hardening headers, and /docs off unless the operator turns it on."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common import desired
from common.config import ApiSettings

P = "/api/v1/realtime-ai"
START = '{"stream_config": {"url": "demo", "protocol": "file", "stream_id": "s1"}, %s}'


@pytest.fixture
def api(r, redis_server):
    from control.api.app import create_app  # noqa: PLC0415

    return TestClient(create_app(redis_server), raise_server_exceptions=False)


def _post(api: TestClient, fields: str):
    return api.post(f"{P}/start", content=START % fields, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ('"processing_settings": {"max_fps": NaN}', "max_fps"),
        ('"model_settings": {"confidence_threshold": Infinity}', "confidence_threshold"),
        ('"analytics_settings": {"dwell_s": -Infinity}', "dwell_s"),
    ],
)
def test_nan_and_infinity_are_422_naming_the_field(api, r, fields, field):
    resp = _post(api, fields)
    assert resp.status_code == 422, resp.text
    assert field in {e["loc"][-1] for e in resp.json()["detail"]}, resp.json()
    assert desired.streams(r) == []


def test_class_names_the_model_lacks_are_refused(api, r):
    resp = _post(
        api, '"model_settings": {"variant": "rtai-shapes"}, "analytics_settings": {"classes": ["circle", "car"]}'
    )
    assert resp.status_code == 422, resp.text
    error = resp.json()["detail"][0]
    assert error["loc"] == ["body", "analytics_settings", "classes", 1]
    assert "'car'" in error["msg"] and "circle, square, triangle" in error["msg"]
    resp = _post(api, '"model_settings": {"variant": "yolo11n"}, "analytics_settings": {"classes": ["not-a-class"]}')
    assert resp.status_code == 422 and "'not-a-class'" in resp.text and "person" in resp.text
    assert desired.streams(r) == []
    resp = _post(api, '"model_settings": {"variant": "yolo11n"}, "analytics_settings": {"classes": ["person", "car"]}')
    assert resp.status_code == 200, resp.text


def test_page_and_api_carry_hardening_headers(api):
    for path in ("/", "/stream/s1", "/static/app.js", f"{P}/services"):
        resp = api.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert "script-src 'self';" in resp.headers["content-security-policy"]


def test_docs_are_off_unless_turned_on(redis_server, api):
    from control.api.app import create_app  # noqa: PLC0415

    assert api.get("/docs").status_code == 404
    assert api.get("/redoc").status_code == 404
    assert api.get("/openapi.json").status_code == 200  # the schema itself runs no script
    on = TestClient(create_app(redis_server, limits=ApiSettings(api_docs=True)))
    resp = on.get("/docs")
    assert resp.status_code == 200 and "swagger-ui" in resp.text
    assert "cdn.jsdelivr.net" in resp.headers["content-security-policy"]
