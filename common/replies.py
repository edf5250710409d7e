"""Redis replies as the fleet reads them. Clients never set decode_responses, so every reply is
bytes; redis-py types them `bytes | str`, and these helpers turn them into what the code uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def text(value: bytes | str) -> str:
    """A reply as text (UTF-8; undecodable bytes replaced, as shown to people)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def texts(values: Iterable[bytes | str]) -> list[str]:
    """Set or list members as sorted text."""
    return sorted(text(v) for v in values)


def text_map(values: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash (HGETALL) as text keys and values."""
    return {text(k): text(v) for k, v in values.items()}
