"""Property-based API testing with schemathesis: every route, generated bodies and paths, against a
real Redis. No 5xx, every response matches the OpenAPI document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.mark.timeout(180)
def test_api_matches_its_openapi_document(r, redis_server):
    from producer.api import create_app  # noqa: PLC0415

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(redis_server))
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()
        checked.append(operation.label)
    assert len(checked) == 7, checked
