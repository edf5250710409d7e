"""Strings from Redis made safe to print on a terminal: control characters (escape sequences that
could move the cursor, clear the screen or retitle the terminal) are replaced, in a whole report."""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL, except none: a status line has no use for tab or newline either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: Any) -> Any:
    """`value` with every string in it (dict keys too) stripped of control characters (shown as `?`)."""
    if isinstance(value, str):
        return _CONTROL.sub("?", value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(printable(v) for v in value)
    return value
