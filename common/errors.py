"""The project's error tree. Every error the fleet raises on purpose derives from RtaiError."""

from __future__ import annotations


class RtaiError(Exception):
    """Root of every error realtime-ai raises on purpose."""


class ConfigError(RtaiError):
    """A setting is missing, malformed or inconsistent."""


class SchemaError(RtaiError):
    """A payload on the wire is malformed, too large or of an unknown version."""


class RecordError(SchemaError):
    """A pub/sub record (preview, tracked frame, snapshot, event) that is not one; `reason` is the short
    label its reader counts it under (`bad seq`, `bad number`, `bad size`, `no jpeg`, `malformed`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class FrameDecodeError(SchemaError):
    """A frame's image bytes could not be decoded (broken JPEG, wrong raw size)."""


class StreamError(RtaiError):
    """A video source could not be opened or read."""


class ModelError(RtaiError):
    """A model could not be resolved or loaded."""


class GpuError(RtaiError):
    """A GPU could not be queried or used."""


class JobRejectedError(RtaiError):
    """A job names a function outside the worker's allow-list, or cannot be read at all."""


class RedisUnavailableError(RtaiError):
    """The fleet's Redis could not be reached. `permanent`: waiting will not help (a wrong URL,
    password or TLS setting), as opposed to a Redis that did not answer in time."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class SourceRefusedError(ConfigError):
    """A source URL from an API request is not allowed (scheme, host or file outside the media root)."""
