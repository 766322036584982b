"""A DualEncoder to and from a sentence-transformers folder (loadable offline by ``SentenceTransformer``).

The export is sentence-transformers' own ``save`` of Transformer → Pooling → [Dense] → [Normalize]
(the student's head is those very modules). Prefixes become the ``query`` / ``document`` prompts,
the per-side max lengths the Transformer's ``query_length`` / ``document_length`` (read by
``encode_query`` / ``encode_document`` since sentence-transformers 6; older releases use the one
``max_seq_length``, set to the passage length). A sidecar JSON keeps the exact ``StudentOptions``.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.atomic import atomic_folder
from students.dual_encoder import SIDECAR, DualEncoder, load_student


def save_sentence_transformers(encoder: DualEncoder, path: str | Path) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``path`` (replaced atomically)."""
    if not encoder.shared:
        raise ValueError("a sentence-transformers folder holds one transformer; "
                         "this student has a separate passage tower (shared=False)")
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    with atomic_folder(path) as tmp:  # built beside the target, renamed into place when complete
        to_sentence_transformer(encoder).save(str(tmp), create_model_card=False)
        _dump(tmp / SIDECAR, asdict(encoder.options))
    return path


def to_sentence_transformer(encoder: DualEncoder):
    """A ``SentenceTransformer`` sharing the encoder's modules (weights are not copied)."""
    from sentence_transformers import SentenceTransformer

    opts = encoder.options
    transformer = encoder.transformer or _transformer_for(encoder)
    transformer.max_seq_length = opts.passage_max_length
    transformer.query_length, transformer.document_length = opts.query_max_length, opts.passage_max_length
    was_training = encoder.training
    model = SentenceTransformer(
        modules=[transformer, *encoder.head], device=str(encoder.device),
        prompts={"query": opts.query_prefix, "document": opts.passage_prefix},
        # with unit vectors cosine and dot agree; without, training scored with the dot product
        similarity_fn_name="cosine" if opts.normalize else "dot",
    )
    encoder.train(was_training)  # SentenceTransformer() switches the shared modules to eval
    return model


def _transformer_for(encoder: DualEncoder):
    """A Transformer module for an encoder built by hand from (model, tokenizer): load a saved copy,
    then put the encoder's own model object in it."""
    from sentence_transformers.base.modules import Transformer

    with tempfile.TemporaryDirectory() as tmp:
        encoder.model.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        transformer = Transformer(tmp, model_kwargs={"local_files_only": True},
                                  processor_kwargs={"local_files_only": True})
    transformer.model = encoder.model
    return transformer


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def load_sentence_transformers(path: str | Path, **overrides: Any) -> DualEncoder:
    """A DualEncoder from a sentence-transformers folder (options as in ``load_student``)."""
    folder = Path(path).expanduser()
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder} is not a sentence-transformers folder (no modules.json)")
    return load_student(folder, **overrides)
