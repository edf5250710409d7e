"""`rtai api`: serve the control plane on port 2000."""

from __future__ import annotations

import click

from common.config import env_value, redis_url
from common.proctitle import set_title


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 to expose it).")
@click.option("--port", type=int, default=2000, show_default=True)
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN' [env RTAI_API_TOKEN].")
def api(host: str, port: int, redis_url: str | None, token: str | None) -> None:
    """Serve the REST control plane (start/stop/status/gpu-info/metrics)."""
    import uvicorn  # noqa: PLC0415

    from common.redis_client import connect  # noqa: PLC0415

    from .api import create_app  # noqa: PLC0415

    connect(_url(redis_url)).close()  # a wrong URL fails fast, saying why
    set_title(f"rtai-api:{port}")
    app = create_app(_url(redis_url), token=token or env_value("api_token"))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _url(override: str | None) -> str:
    return redis_url(override)
