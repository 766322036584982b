"""A DualEncoder to and from a sentence-transformers folder (loadable offline by ``SentenceTransformer``).

The folder uses the classic layout (``modules.json`` with Transformer → Pooling → Normalize,
``sentence_bert_config.json``, ``1_Pooling/config.json`` with ``pooling_mode_*`` flags), which every
sentence-transformers release from 2.x to 6.x reads. Prefixes become the ``query`` / ``document``
prompts. A sidecar JSON keeps what that format cannot hold (the query max length).
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from distill.atomic import swap_folder
from students.dual_encoder import _OPTION_FIELDS, SIDECAR, DualEncoder, load_student

_POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                  "last": "pooling_mode_lasttoken"}


def save_sentence_transformers(encoder: DualEncoder, path: str | Path) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``path`` (replaced atomically)."""
    if not encoder.shared:
        raise ValueError("a sentence-transformers folder holds one transformer; "
                         "this student has a separate passage tower (shared=False)")
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target (same file system, so the final rename is atomic)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _write_folder(encoder, tmp)
        swap_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_folder(encoder: DualEncoder, folder: Path) -> None:
    import sentence_transformers
    import torch
    import transformers

    opts = encoder.options
    folder.mkdir(parents=True)
    encoder.model.save_pretrained(str(folder))
    encoder.tokenizer.save_pretrained(str(folder))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if opts.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    _dump(folder / "modules.json", modules)
    _dump(folder / "sentence_bert_config.json",
          {"max_seq_length": opts.passage_max_length, "do_lower_case": False})
    pooling = {"word_embedding_dimension": encoder.dim, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
               "include_prompt": True}
    pooling.update({flag: mode == opts.pooling for mode, flag in _POOLING_FLAGS.items()})
    (folder / "1_Pooling").mkdir()
    _dump(folder / "1_Pooling" / "config.json", pooling)
    _dump(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "model_type": "SentenceTransformer",
        "prompts": {"query": opts.query_prefix, "document": opts.passage_prefix},
        "default_prompt_name": None,
        # with unit vectors cosine and dot agree; without, training scored with the dot product
        "similarity_fn_name": "cosine" if opts.normalize else "dot",
    })
    _dump(folder / SIDECAR, {name: getattr(opts, name) for name in _OPTION_FIELDS})


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def load_sentence_transformers(path: str | Path, **overrides: Any) -> DualEncoder:
    """A DualEncoder from a sentence-transformers folder (options as in ``load_student``)."""
    folder = Path(path).expanduser()
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder} is not a sentence-transformers folder (no modules.json)")
    return load_student(folder, **overrides)
