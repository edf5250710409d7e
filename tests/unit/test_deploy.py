"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file against
the Compose specification schema, and every rtai command they run against the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

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
    for name in ("worker", "worker-cpu", "producer", "tracker"):
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


def test_gpu_workers_are_pinned_to_one_gpu_each_and_cpu_profile_reserves_none():
    """`count: all` exposes every GPU to every container whatever NVIDIA_VISIBLE_DEVICES says: each GPU
    worker names its own device, and no two name the same one."""
    gpu_workers = {n: s for n, s in COMPOSE["services"].items() if "deploy" in s and n.startswith("worker")}
    assert {"worker", "worker-gpu1"} <= set(gpu_workers)
    pinned = []
    for name, svc in gpu_workers.items():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and "count" not in device, name
        (gpu,) = device["device_ids"]
        pinned.append(gpu)
        assert svc["command"] == ["worker", "--all-gpus"]
        assert "NVIDIA_VISIBLE_DEVICES" not in svc["environment"], "device_ids pins the GPU"
    assert len(set(pinned)) == len(pinned), f"two workers on one GPU: {pinned}"
    assert COMPOSE["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [
        "${RTAI_GPU:-0}"
    ]
    assert "deploy" not in COMPOSE["services"]["worker-cpu"]
    assert (ROOT / ".env").read_text().strip() == "COMPOSE_PROFILES=gpu"


def test_every_long_running_service_has_a_healthcheck_the_image_can_run():
    from control import health  # noqa: PLC0415

    roles = {"worker", "api", "redis"}
    for name, svc in COMPOSE["services"].items():
        if svc.get("image", "").startswith(("prom/", "grafana/", "nginx")):
            continue
        if svc.get("image", "").startswith("redis:"):  # Redis, its replicas and sentinels: redis-cli
            assert svc["healthcheck"]["test"][:2] == ["CMD", "redis-cli"], name
            continue
        check = svc["healthcheck"]
        if name == "status":
            assert check == {"disable": True}
            continue
        test = check["test"]
        assert test[:4] == ["CMD", "python", "-m", "control.health"], name
        assert test[4] in roles, f"{name}: unknown health role {test[4]}"
        assert health.__doc__ and f"`{test[4]}`" in health.__doc__
    assert COMPOSE["services"]["api"]["healthcheck"]["test"][4:] == ["api", "2000"]
    assert COMPOSE["services"]["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_ha_profile_is_a_master_two_replicas_and_three_sentinels_the_fleet_url_names():
    from common.redis_client import parse_sentinel_url  # noqa: PLC0415

    services = COMPOSE["services"]
    ha = {name for name, svc in services.items() if "ha" in svc.get("profiles", [])}
    assert ha == {"redis-replica1", "redis-replica2", "sentinel1", "sentinel2", "sentinel3"}
    for name in ("redis-replica1", "redis-replica2"):
        assert services[name]["command"][1:4] == ["--replicaof", "redis", "6379"]
    for name in ("sentinel1", "sentinel2", "sentinel3"):
        script = " ".join(services[name]["command"])
        assert "sentinel monitor rtai redis 6379 2" in script and "--sentinel" in script
        assert "down-after-milliseconds rtai 2000" in script
    header = (ROOT / "docker-compose.yml").read_text().split("x-rtai:")[0]
    url = next(word for word in header.split() if word.startswith("RTAI_REDIS_URL=redis+sentinel://"))
    parsed = parse_sentinel_url(url.split("=", 1)[1])
    assert parsed is not None and parsed.service == "rtai"
    assert {host for host, _port in parsed.sentinels} == {"sentinel1", "sentinel2", "sentinel3"}
    assert services["api"]["environment"]["RTAI_REDIS_URL"] == "${RTAI_REDIS_URL:-redis://redis:6379/0}"


def test_weights_survive_on_a_named_volume_where_models_load():
    for name in ("worker", "worker-gpu1", "worker-cpu", "api"):
        svc = COMPOSE["services"][name]
        assert svc["environment"]["RTAI_WEIGHTS_DIR"] == "/weights"
        assert any(v.split(":")[:2] == ["weights", "/weights"] for v in svc["volumes"]), name
    assert "weights" in COMPOSE["volumes"]
    assert "RTAI_WEIGHTS_DIR=/weights" in (ROOT / "Dockerfile").read_text()


def test_the_proxy_fronts_the_api_with_the_limits_the_api_lacks():
    conf = (DEPLOY / "nginx.conf").read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "client_max_body_size  1m", "limit_conn "):
        assert directive in conf
    assert "proxy_buffering off" in conf, "the live view's SSE must not be buffered"
    assert "proxy_pass http://rtai_api" in conf and "server api:2000" in conf
    proxy = COMPOSE["services"]["proxy"]
    assert (
        proxy["profiles"] == ["proxy"] and _mounts("proxy")["/etc/nginx/conf.d/default.conf"] == "./deploy/nginx.conf"
    )
    # Prometheus and the proxy reach the API by the name `api`, which the API must answer.
    assert "api" in COMPOSE["services"]["api"]["environment"]["RTAI_API_ALLOWED_HOSTS"]


@pytest.mark.parametrize(
    "service", ["worker", "worker-gpu1", "worker-cpu", "producer", "producer-daemon", "api", "tracker", "status"]
)
def test_every_compose_command_exists_in_the_cli(service):
    _parse_rtai(COMPOSE["services"][service]["command"])


def test_compose_environment_names_real_settings():
    from common.config import ApiSettings, ProducerSettings, WorkerSettings  # noqa: PLC0415

    fields = set(ProducerSettings.model_fields) | set(WorkerSettings.model_fields) | set(ApiSettings.model_fields)
    for service in COMPOSE["services"].values():
        for var in service.get("environment", {}) or {}:
            if var.startswith("RTAI_") and var not in ("RTAI_API_TOKEN", "RTAI_WEIGHTS_DIR"):
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
    # The build context minus .dockerignore goes in whole: which packages install is pyproject's alone
    # (tests/integration/test_image_build.py builds that context).
    assert "COPY . ." in text
    for binary in ("ffmpeg",):  # what the README's install step puts on a host, the image has too
        assert binary in text


# -- the `monitoring` profile: Prometheus + Grafana, parsed (no container engine runs here) -----------
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"


def _mounts(service: str) -> dict[str, str]:
    """container path -> repo path of a service's bind mounts."""
    out = {}
    for v in COMPOSE["services"][service]["volumes"]:
        host, _, rest = v.partition(":")
        out[rest.removesuffix(":ro")] = host
    return out


def test_monitoring_profile_mounts_files_that_exist_in_the_repo():
    for name in ("prometheus", "grafana"):
        svc = COMPOSE["services"][name]
        assert svc["profiles"] == ["monitoring"]
        for host in _mounts(name).values():
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repo"
    prom = _mounts("prometheus")
    assert prom["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in COMPOSE["services"]["prometheus"]["command"]


def test_prometheus_scrapes_the_api_metrics_endpoint():
    conf = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = conf["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    api = COMPOSE["services"]["api"]
    assert host == "api" and "--port" in api["command"]
    assert api["command"][api["command"].index("--port") + 1] == port


def test_grafana_provisions_the_datasource_and_dashboard_the_panels_use():
    (ds,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "realtime-ai.yml").read_text())["providers"]
    assert _mounts("grafana")[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    dash = json.loads((GRAFANA / "dashboards" / "realtime-ai.json").read_text())
    assert dash["panels"]
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"]
        assert all(t["datasource"]["uid"] == ds["uid"] and t["expr"] for t in panel["targets"])


def _exposed_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_dashboard_metric_is_exposed_by_the_api(r):
    """Names read from /metrics' own output over a real Redis with a stream, latencies and a GPU worker."""
    from prometheus_client import generate_latest  # noqa: PLC0415

    from common import keys, ledger  # noqa: PLC0415
    from control.api.metrics import registry  # noqa: PLC0415

    r.sadd(keys.STREAMS, "cam1")
    r.hset(keys.stream("cam1"), mapping={"state": "running"})
    with r.pipeline() as pipe:
        ledger.count(pipe, "cam1", ledger.PRODUCED, 4)
        ledger.count(pipe, "cam1", "published", 4)
        ledger.record_latencies(pipe, "cam1", [40.0, 120.0, 300.0, 900.0])
        pipe.execute()
    r.sadd(keys.WORKERS, "w0")
    r.hset(
        keys.worker("w0"),
        mapping={
            "gpu": "0",
            "fps": 12.5,
            "frames": 4,
            "gpu_utilization_pct": 55,
            "gpu_memory_used_mb": 900,
            "gpu_temperature_c": 61,
            "gpu_power_w": 80,
        },
    )
    r.set(keys.worker_alive("w0"), 1)
    exposed = _exposed_names(generate_latest(registry(r)).decode())
    dash = json.loads((GRAFANA / "dashboards" / "realtime-ai.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"\brtai_[a-z0-9_]+", t["expr"])}
    assert used, "the dashboard queries no rtai metric"
    assert used <= exposed, f"dashboard metrics /metrics does not expose: {sorted(used - exposed)}"
    wanted = {
        "rtai_latency_seconds_bucket",
        "rtai_gpu_utilization_pct",
        "rtai_gpu_memory_used_mb",
        "rtai_gpu_temperature_c",
    }
    assert wanted <= used
    assert {"rtai_events_total", "rtai_zone_tracks"} <= used, "the analytics panels"


def test_dashboard_selects_streams_and_its_ledger_adds_no_produced_frames():
    dash = json.loads((GRAFANA / "dashboards" / "realtime-ai.json").read_text())
    (var,) = dash["templating"]["list"]
    assert var["name"] == "stream" and var["includeAll"] and var["multi"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for expr in exprs:
        if "rtai_frames_total" in expr or "rtai_latency" in expr or "rtai_zone" in expr:
            assert 'stream=~"$stream"' in expr, expr
    (ledger_expr,) = [e for e in exprs if "by (stream, outcome) (rate(rtai_frames_total" in e]
    assert 'outcome!="produced"' in ledger_expr, "produced is the total the outcomes add up to, not one of them"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not installed (make install adds it)"
)
@pytest.mark.parametrize("profiles", ["gpu", "gpu,gpu1,proxy,monitoring,tools", "cpu"])
def test_docker_compose_itself_accepts_the_file(profiles):
    """Docker Compose's own parser (no engine needed), with every profile switched on in turn."""
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env=dict(os.environ, COMPOSE_PROFILES=profiles),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
