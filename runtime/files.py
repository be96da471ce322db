"""Reading what an engine manifest or a checkpoint index names: file names confined to their directory, and strict
JSON (UTF-8, finite numbers only). Imports no torch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import GptOssError


def confined(directory: Path, name: Any, error: type[GptOssError], where: str) -> Path:
    """`directory / name` if `name` is a relative file name that stays inside `directory`, symlinks followed;
    otherwise `error` naming `where` (the file and entry that gave the name)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise error(f"{where} is {name!r}, expected a file name")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise error(f"{where} is {name!r}, expected a relative path that stays inside {directory}")
    path = directory / relative
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise error(f"{where} is {name!r}, which cannot be resolved ({exc})") from None
    if not inside:
        raise error(f"{where} is {name!r}, which leads outside {directory} through a symlink")
    return path


def read_json(path: Path, error: type[GptOssError]) -> Any:
    """The JSON value in `path`; `error` naming it if it is not UTF-8 JSON or holds a number that is not finite
    (Python's json reads `NaN`, `Infinity` and `1e999`, which JSON has no place for)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON (nested too deeply)") from None
    found = _non_finite(data)
    if found is not None:
        raise error(f"{path}: {found[0] or 'the value'} is {found[1]}, expected a finite number")
    return data


def _non_finite(data: Any) -> tuple[str, float] | None:
    """The key path (`a.b[2]`, `weight_map['x.y']`) and value of the first number in `data` that is not finite."""
    stack = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return key, value
        if isinstance(value, dict):
            stack += reversed([(_member(key, k), v) for k, v in value.items()])
        elif isinstance(value, list):
            stack += reversed([(f"{key}[{i}]", v) for i, v in enumerate(value)])
    return None


def _member(path: str, key: str) -> str:
    """The path of `key` inside the object at `path`: `path.key`, or `path['key']` for keys that are no names."""
    if not key.isidentifier():
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key
