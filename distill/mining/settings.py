"""Reading a mining recipe: its YAML as a mapping, and each section as a checked dataclass.

Every mistake is one line naming the recipe file (and line, for malformed YAML) and the field:
``recipes/mine/x.yaml: queries.passages: expected int, got 'abc'``.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# The annotations the mining dataclasses use, as written (``from __future__ import annotations``).
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
                                       "dict": (dict,)}


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such recipe") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{line}: malformed YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of recipe keys")
    return raw


def check_value(value: Any, annotation: str, where: str) -> None:
    """``value`` against a dataclass field's annotation ("int", "str | None", ...); bools are not ints."""
    allowed = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in allowed:
        return
    for name in (a for a in allowed if a != "None"):
        types = _TYPES.get(name)
        if types is None:  # an annotation this checker does not know: the dataclass checks it
            return
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return
    raise ValueError(f"{where}: expected {' or '.join(allowed)}, got {value!r}")


def section(cls: type[T], raw: Any, where: str, name: str) -> T:
    """``cls(**raw)`` for the recipe section ``name``: unknown keys and wrongly typed values are
    reported by field, the dataclass's own checks (``__post_init__``) prefixed with ``where``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {name}: expected a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: {name}: unknown keys {', '.join(unknown)} (known: {', '.join(known)})")
    for key, value in raw.items():
        check_value(value, str(known[key].type), f"{where}: {name}.{key}")
    try:
        return cls(**raw)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def check_keys(raw: dict, known: set[str], required: tuple[str, ...], where: str) -> None:
    """A recipe's top level: no unknown keys, every required one present and non-empty."""
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    for key in required:
        if raw.get(key) in (None, ""):
            raise ValueError(f"{where}: {key}: missing")
