"""Where the tool keeps what it builds (indexes, converted models, score caches)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$DISTILL_CACHE`` when set, else ``~/.cache/listwise-distill``."""
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "listwise-distill")
