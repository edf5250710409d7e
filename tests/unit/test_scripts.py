"""Every Lua script lives in common/scripts.py and takes every key it touches from KEYS.

The check reads each script's `redis.call` / `redis.pcall` commands: the first argument of a
command that takes a key must be `KEYS[...]` or a local bound only to KEYS entries (a loop over
KEYS, `local queue = KEYS[best]`), never ARGV nor anything built from it."""

from __future__ import annotations

import ast
import re

import pytest

from common import scripts

from ..helpers import ROOT, parse_python

#: Commands whose first argument is not a key (channels are routed by name, TIME takes none).
NOT_KEYED = {"PUBLISH", "TIME"}
CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'\s*(?:,\s*([^,)]+))?")
KEY_REF = re.compile(r"KEYS\[[^\]]+\]")


def _key_locals(source: str) -> set[str]:
    """Names bound only to KEYS entries: `local a, b = KEYS[..], KEYS[..]` and `for _, k in ipairs(KEYS)`."""
    bound: dict[str, bool] = {}
    for names, values in re.findall(r"local\s+([\w\s,]+?)\s*=\s*([^\n]+)", source):
        parts = [v.strip() for v in values.split(",")]
        for i, name in enumerate(n.strip() for n in names.split(",")):
            value = parts[i] if i < len(parts) else ""
            ok = bool(KEY_REF.fullmatch(value))
            bound[name] = bound.get(name, True) and ok
    for name in re.findall(r"for\s+\w+\s*,\s*(\w+)\s+in\s+ipairs\(KEYS\)", source):
        bound.setdefault(name, True)
    # A later plain assignment (`queue = ARGV[1]`) unbinds it.
    for name in list(bound):
        for value in re.findall(rf"(?<![\w.]){name}\s*=\s*(?!=)([^\n]+)", source):
            if not KEY_REF.fullmatch(value.strip()) and not value.strip().startswith("KEYS["):
                bound[name] = False
    return {name for name, ok in bound.items() if ok}


def key_from_argv(source: str) -> list[str]:
    """The commands of `source` whose key is not taken from KEYS."""
    ok_names = _key_locals(source)
    wrong = []
    for command, first in CALL.findall(source):
        if command.upper() in NOT_KEYED:
            continue
        first = first.strip()
        if KEY_REF.fullmatch(first) or first in ok_names:
            continue
        wrong.append(f"{command} {first}")
    return wrong


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_key_comes_from_KEYS(script):
    assert CALL.search(script.source), "a script that calls Redis"
    assert key_from_argv(script.source) == []


def test_the_check_catches_a_key_from_ARGV():
    assert key_from_argv("redis.call('LPUSH', ARGV[2], ARGV[1])") == ["LPUSH ARGV[2]"]
    assert key_from_argv("redis.call('INCR', ARGV[5] .. job)") == ["INCR ARGV[5] .. job"]
    assert key_from_argv("local q = ARGV[1]\nredis.call('LLEN', q)") == ["LLEN q"]
    assert key_from_argv("local q = KEYS[1]\nq = ARGV[1]\nredis.call('LLEN', q)") == ["LLEN q"]
    assert key_from_argv("local q = KEYS[2]\nredis.call('LLEN', q)") == []
    assert key_from_argv("for i, key in ipairs(KEYS) do redis.call('GET', key) end") == []
    assert key_from_argv("redis.call('PUBLISH', ARGV[1], 'x')") == []


def _lua_outside_scripts_module() -> list[str]:
    """Shipped modules holding a Lua script (a string that calls redis.call) other than common/scripts.py."""
    found = []
    for package in ("common", "producer", "worker", "analytics", "control", "realtime_ai"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "common" / "scripts.py":
                continue
            for node in ast.walk(parse_python(path)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                    found.append(str(path.relative_to(ROOT)))
    return sorted(set(found))


def test_no_script_lives_anywhere_else():
    assert _lua_outside_scripts_module() == []
