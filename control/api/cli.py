"""`rtai api`: serve the control plane on port 2000."""

from __future__ import annotations

import ipaddress

import click

from common.config import ApiSettings, build, env_value, redis_url
from common.errors import ConfigError
from common.proctitle import set_title


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 to expose it).")
@click.option("--port", type=int, default=2000, show_default=True, help="TCP port to listen on.")
@click.option("--redis-url", default=None, help="Redis URL [env RTAI_REDIS_URL].")
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN' [env RTAI_API_TOKEN].")
@click.option(
    "--insecure", is_flag=True, help="Serve a non-loopback address without a token (only behind a trusted network)."
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Another Host name clients use to reach the API (repeatable; '*' turns the Host check off) "
    "[env RTAI_API_ALLOWED_HOSTS, comma list].",
)
@click.option("--docs", is_flag=True, default=None, help="Serve /docs (Swagger UI from its CDN) [env RTAI_API_DOCS].")
def api(
    host: str,
    port: int,
    redis_url: str | None,
    token: str | None,
    insecure: bool,
    allowed_hosts: tuple[str, ...],
    docs: bool | None,
) -> None:
    """Serve the REST control plane (start/stop/status/gpu-info/metrics)."""
    token = token or env_value("api_token")
    if token is None and not is_loopback(host):
        if not insecure:
            raise ConfigError(
                f"refusing to serve the API on {host} without a token: anyone who can reach port {port} could "
                "start streams on the fleet. Set RTAI_API_TOKEN (or --token), bind 127.0.0.1, or pass --insecure "
                "if only trusted hosts can reach this address"
            )
        click.echo(
            f"WARNING: rtai api serves {host}:{port} with NO token (--insecure): anyone who can reach it controls "
            "the fleet's streams",
            err=True,
        )
    import uvicorn  # noqa: PLC0415

    from common.redis_client import connect  # noqa: PLC0415
    from common.sources import redact  # noqa: PLC0415

    from .app import PREFIX, create_app  # noqa: PLC0415
    from .guards import HostPolicy  # noqa: PLC0415
    from .server import connection_cap, guarded_protocol, raise_fd_limit  # noqa: PLC0415

    connect(_url(redis_url).split()[0]).close()  # a wrong home URL fails now; a shard down stops its own
    set_title(f"rtai-api:{port}")
    limits = build(ApiSettings, api_docs=docs)
    hosts = HostPolicy.parse(host, ",".join((limits.api_allowed_hosts, *allowed_hosts)))
    app = create_app(_url(redis_url), token=token, limits=limits, hosts=hosts)
    cap = connection_cap(limits.api_max_connections, raise_fd_limit())
    protocol = guarded_protocol(header_timeout_s=limits.api_header_timeout_s, max_connections=cap)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"rtai api: serving http://{shown}:{port}/ (live view; REST under {PREFIX}), "
        f"token {'required' if token else 'off'}, /docs {'on' if limits.api_docs else 'off'}, "
        f"Redis {redact(_url(redis_url))}"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol, h11_max_incomplete_event_size=16_384)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(override: str | None) -> str:
    return redis_url(override)
