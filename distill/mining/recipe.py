"""Reading a mining recipe's YAML: a mapping, or one line naming the file (and line) that is wrong."""
from __future__ import annotations

from pathlib import Path

import yaml


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
