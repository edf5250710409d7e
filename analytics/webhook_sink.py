"""Events to an HTTP endpoint: a JSON POST signed with HMAC-SHA256 (`X-RTAI-Signature: sha256=<hex>`
of the body), retried with exponential backoff; after MAX_ATTEMPTS failures the event is counted in
the sink's `dead_letter` and kept in `rtai:sink:<name>` (last_dead), and delivery goes on. A token
bucket keeps POSTs under `rate` per second."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from common import keys
from common.errors import ConfigError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_S = 0.2
BACKOFF_MAX_S = 5.0
TIMEOUT_S = 5.0
SIGNATURE_HEADER = "X-RTAI-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookTarget:
    def __init__(
        self, url: str, *, secret: str, client: redis.Redis, name: str, rate: float = 50.0, attempts: int = MAX_ATTEMPTS
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL {url!r}: expected http:// or https://")
        self.url, self.secret, self.client, self.name = url, secret, client, name
        self.rate, self.attempts = rate, attempts
        self.tokens, self.t_tokens = rate, time.monotonic()

    def _take_token(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.t_tokens) * self.rate)
            self.t_tokens = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            time.sleep((1 - self.tokens) / self.rate)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature(self.secret, body)},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()

    def deliver(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, separators=(",", ":")).encode()
        delay = BACKOFF_S
        for attempt in range(1, self.attempts + 1):
            self._take_token()
            try:
                self._post(body)
                return True
            except (urllib.error.URLError, OSError) as exc:
                log.info("webhook %s: attempt %d for %s failed: %s", self.name, attempt, event.get("id"), exc)
                self.client.hincrby(keys.sink(self.name), "failed", 1)
            if attempt < self.attempts:
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        log.warning("webhook %s: event %s dead-lettered after %d attempts", self.name, event.get("id"), self.attempts)
        self.client.hincrby(keys.sink(self.name), "dead_letter", 1)
        self.client.hset(keys.sink(self.name), "last_dead", body)
        return True  # counted: acked so that delivery goes on

    def close(self) -> None:
        pass
