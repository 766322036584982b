"""A GGUF causal LM (the packaged SmolLM2) → an ordinary Hugging Face folder, converted once.

Parsing the GGUF's metadata, tokenizer and 4-bit tensors takes one to two minutes on a small CPU;
the converted folder (float32 safetensors + tokenizer) loads in seconds. It is kept under
``<cache root>/gguf/<stem>-<key>``, the key following the file's path, size and mtime.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_FOLDER_FORMAT = 1  # bump when the converted folder's content changes for the same file
_GGUF_MARKER = "gguf-import.json"


def _gguf_model(gguf: Path):
    """The GGUF file's model, dequantised to float32 by transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # Not from_pretrained(gguf_file=...): that needs accelerate and marks the model as "quantized
    # with gguf", which save_pretrained refuses. The same conversion by hand: config from the file,
    # tensors dequantised and renamed by transformers' own GGUF reader (bit-identical weights).
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise RuntimeError(f"{gguf}: GGUF tensors do not match {type(model).__name__}: missing "
                           f"{sorted(set(result.missing_keys) - tied)}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    return model


def gguf_folder(gguf: str | Path) -> Path:
    """A Hugging Face folder (float32 safetensors + tokenizer) converted once from a GGUF file.

    Kept under ``<cache root>/gguf/<stem>-<key>``, the key following the file's path, size and
    mtime; written to a temporary folder and renamed into place, so a crash leaves no half folder.
    """
    from transformers import AutoTokenizer

    from distill.paths import cache_root

    gguf = Path(gguf).resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{GGUF_FOLDER_FORMAT}".encode()).hexdigest()[:12]
    target = cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (target / _GGUF_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to a transformers folder (once) at %s", gguf, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = _gguf_model(gguf)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        (tmp / _GGUF_MARKER).write_text(json.dumps(
            {"source": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "format": GGUF_FOLDER_FORMAT}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / _GGUF_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

