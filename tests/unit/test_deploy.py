"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file against
the Compose specification schema, and every rtai command they run against the real CLI."""

from __future__ import annotations

import json
import re

import click
import jsonschema
import pytest
import yaml

from control.cli import cli

from ..helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())


def _parse_rtai(args: list[str]) -> None:
    """Parse `rtai ARGS` with the real click commands; raises click.UsageError on a bad flag."""
    ctx = cli.make_context("rtai", list(args))
    sub_name, *rest = ctx.protected_args + ctx.args
    sub = cli.get_command(ctx, sub_name)
    assert sub is not None, f"rtai has no command {sub_name!r}"
    sub.make_context(sub_name, rest, parent=ctx)


def test_compose_file_follows_the_compose_spec():
    jsonschema.Draft201909Validator(SCHEMA).validate(COMPOSE)  # the draft its $schema names


def test_redis_has_a_healthcheck_and_the_rest_waits_for_it():
    assert COMPOSE["services"]["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("worker", "worker-cpu", "producer"):
        assert COMPOSE["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_keeps_its_data_in_an_append_only_file_on_a_named_volume():
    redis_svc = COMPOSE["services"]["redis"]
    args = redis_svc["command"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "redis-server"
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    volume, _, target = redis_svc["volumes"][0].partition(":")
    assert target == options["--dir"] == "/data"
    assert volume in COMPOSE["volumes"], "a named volume, not a host path or an anonymous one"


def test_gpu_worker_reserves_nvidia_gpus_and_cpu_profile_does_not():
    gpu = COMPOSE["services"]["worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "CUDA_VISIBLE_DEVICES" in gpu["environment"]
    assert "deploy" not in COMPOSE["services"]["worker-cpu"]
    assert (ROOT / ".env").read_text().strip() == "COMPOSE_PROFILES=gpu"


@pytest.mark.parametrize("service", ["worker", "worker-cpu", "producer", "producer-daemon", "api", "status"])
def test_every_compose_command_exists_in_the_cli(service):
    _parse_rtai(COMPOSE["services"][service]["command"])


def test_compose_environment_names_real_settings():
    from common.config import ApiSettings, ProducerSettings, WorkerSettings  # noqa: PLC0415

    fields = set(ProducerSettings.model_fields) | set(WorkerSettings.model_fields) | set(ApiSettings.model_fields)
    for service in COMPOSE["services"].values():
        for var in service.get("environment", {}) or {}:
            if var.startswith("RTAI_") and var != "RTAI_API_TOKEN":
                assert var[5:].lower() in fields, f"{var} is not a setting"


def test_a_wrong_flag_would_be_caught():
    with pytest.raises(click.UsageError):
        _parse_rtai(["worker", "--no-such-flag"])


def test_dockerfile_entrypoint_and_install_match_the_project():
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert entry == ["rtai"] and cmd == ["--help"]
    assert "RUN pip install ." in text
    for package in ("common", "producer", "worker"):
        assert f"COPY {package} ./{package}" in text
    for binary in ("ffmpeg",):  # what the README's install step puts on a host, the image has too
        assert binary in text
