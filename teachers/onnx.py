"""ONNX cross-encoders through onnxruntime (the packaged INT8 ms-marco-MiniLM-L-12-v2 is one)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from teachers.base import TokenizedTeacher, available_cores, cap_length, fingerprint, pick_relevance

ONNX_FILES = ("model.onnx", "onnx/model.onnx")


def onnx_file(folder: str | Path) -> Path | None:
    """The ONNX graph of a model folder (top level, or optimum's ``onnx/`` sub-folder), if any."""
    for rel in ONNX_FILES:
        if (Path(folder) / rel).is_file():
            return Path(folder) / rel
    return None


class OnnxTeacher(TokenizedTeacher):
    """An ONNX sequence-classification graph (1 or 2 logits) with its tokenizer."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        threads: int | None = None,
        providers: list[str] | None = None,
        show_progress: bool = False,
    ):
        import onnxruntime as ort

        folder = Path(path)
        self.name = name or str(folder)
        graph = onnx_file(folder)
        if graph is None:
            raise ValueError(f"teacher {self.name!r}: {folder} has no model.onnx")
        tokenizer = _load_tokenizer(folder, graph.parent, self.name)
        length = cap_length(max_length, tokenizer, **_position_limits(folder))
        super().__init__(tokenizer, batch_size=batch_size, max_length=length, show_progress=show_progress)

        options = ort.SessionOptions()
        # onnxruntime's default counts logical CPUs of the host, not the cores this process may use.
        options.intra_op_num_threads = int(threads or available_cores())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), options, providers=providers or ["CPUExecutionProvider"])

        declared = {i.name for i in self.session.get_inputs()}
        unknown = declared - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in declared:
            raise ValueError(f"teacher {self.name!r}: {graph} expects inputs {sorted(declared)}; "
                             "a cross-encoder graph takes input_ids, attention_mask and optionally token_type_ids")
        # Feed only what the graph declares: a graph exported without token_type_ids rejects them.
        self._inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in declared]
        outputs = self.session.get_outputs()
        output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self._output = output.name
        width = output.shape[-1] if output.shape else None
        self.num_labels = width if isinstance(width, int) else self._probe_width()
        pick_relevance(np.zeros((1, self.num_labels)), self.num_labels, self.name)  # reject >2 heads early
        self._identity = (
            f"onnx:{self.name}@{fingerprint(graph.parent)}|max_length={self.max_length}"
            f"|precision=graph|head=logit{self.num_labels - 1}of{self.num_labels}"
        )

    @property
    def identity(self) -> str:
        return self._identity

    def _run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        logits = self.session.run([self._output], {k: arrays[k] for k in self._inputs})[0]
        return logits.reshape(len(arrays["input_ids"]), -1)

    def _probe_width(self) -> int:
        return int(self._run(self._pad(self._prepare(["a"], ["b"]))).shape[-1])

    def _score_batch(self, items) -> torch.Tensor:
        logits = self._run(self._pad(items))
        return torch.from_numpy(np.ascontiguousarray(pick_relevance(logits, self.num_labels, self.name), dtype=np.float32))


def _load_tokenizer(folder: Path, graph_dir: Path, name: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    for where in dict.fromkeys((folder, graph_dir)):
        if (where / "tokenizer_config.json").is_file() or (where / "config.json").is_file():
            return AutoTokenizer.from_pretrained(where, local_files_only=True)
        if (where / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(where / "tokenizer.json"))
    raise ValueError(f"teacher {name!r}: {folder} has model.onnx but no tokenizer.json / tokenizer_config.json")


def _position_limits(folder: Path) -> dict:
    """``max_positions`` / ``model_type`` from the folder's config.json, where it has one."""
    config = folder / "config.json"
    if not config.is_file():
        return {}
    raw = json.loads(config.read_text())
    return {"max_positions": raw.get("max_position_embeddings"), "model_type": raw.get("model_type")}
