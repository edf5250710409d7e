"""Events to an MQTT broker (paho-mqtt, QoS 1): `<prefix>/<stream>/events`, per-zone counts on
`<prefix>/<stream>/<zone>/count` (retained), `<prefix>/availability` online/offline (retained, the
offline one as the last will). paho reconnects by itself; until it has, events wait in the log.

A message paho has queued (sent, or kept to send after its reconnect) is never published again:
a retry waits for that same message's PUBACK. Publishing a fresh copy at each retry piled copies
up in paho's queue during a broker outage, and behind them every new PUBACK wait timed out."""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from common.analytics_settings import NAME_PATTERN
from common.errors import ConfigError, SchemaError
from common.keys import STREAM_ID_RE

log = logging.getLogger(__name__)

#: A topic level from an event (stream, zone): no `/`, `+`, `#` or NUL, so it is one level and no wildcard.
_TOPIC_PART = STREAM_ID_RE
_ZONE_PART = re.compile(NAME_PATTERN)

#: How long one delivery waits for the broker's PUBACK before the sink tries again later.
PUBACK_TIMEOUT_S = 5.0


class MqttTarget:
    def __init__(self, url: str, *, prefix: str = "rtai", client_id: str = "rtai-sink") -> None:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "tcp") or not u.hostname:
            raise ConfigError(f"MQTT URL {url!r}: expected mqtt://host[:port]")
        self.prefix = prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
        self.connected = threading.Event()
        #: Messages paho holds for an event (event id, topic), until their PUBACK.
        self._queued: dict[tuple[str, str], mqtt.MQTTMessageInfo] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if u.username:
            self.client.username_pw_set(u.username, u.password)
        self.client.will_set(self.availability, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.connect_async(u.hostname, u.port or 1883, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            return
        client.publish(self.availability, "online", qos=1, retain=True)
        self.connected.set()

    def deliver(self, event: dict[str, Any]) -> bool:
        if not self.connected.wait(timeout=1.0):
            return False
        stream = event["stream"]
        if not isinstance(stream, str) or not _TOPIC_PART.fullmatch(stream):
            raise SchemaError(f"event {event.get('id')!r}: stream {stream!r} is not a stream id (MQTT topic level)")
        messages = [(f"{self.prefix}/{stream}/events", json.dumps(event), False)]
        if "zone" in event and "count" in event:
            zone, count = event["zone"], event["count"]
            if not isinstance(zone, str) or not _ZONE_PART.fullmatch(zone):
                raise SchemaError(f"event {event.get('id')!r}: zone {zone!r} is not a zone name (MQTT topic level)")
            if not isinstance(count, int) or isinstance(count, bool):
                raise SchemaError(f"event {event.get('id')!r}: count {count!r} is not a whole number")
            messages.append((f"{self.prefix}/{stream}/{zone}/count", str(count), True))
        for topic, payload, retain in messages:
            key = (str(event.get("id")), topic)
            info = self._queued.get(key)
            if info is None:
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    # Not sent, but kept in paho's queue: it goes out once paho has reconnected.
                    info.rc = mqtt.MQTT_ERR_SUCCESS
                elif info.rc != mqtt.MQTT_ERR_SUCCESS:
                    log.info("MQTT publish of %s not queued: %s", event.get("id"), mqtt.error_string(info.rc))
                    return False
                self._queued[key] = info
            info.wait_for_publish(timeout=PUBACK_TIMEOUT_S)
            if not info.is_published():
                return False
            del self._queued[key]
        return True

    def close(self) -> None:
        if self.connected.is_set():
            try:
                self.client.publish(self.availability, "offline", qos=1, retain=True).wait_for_publish(timeout=2)
            except (RuntimeError, ValueError) as exc:
                log.info("MQTT: offline not sent: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
