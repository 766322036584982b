"""LLM queries: ``question`` / ``claim`` / ``title`` (the CADET query types, Tamber et al. 2025)
from any causal LM through ``transformers`` generation: editable prompt templates, the tokenizer's
chat template when it has one, batched left-padded generation, cleaned one-line outputs.

A ``.gguf`` generator (the packaged SmolLM2) is converted once to an ordinary Hugging Face folder
by :mod:`distill.importers.gguf`.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from distill.mining.queries import SyntheticQuery, _check_int, _config_from_dict, normalize_query

# --------------------------------------------------------------------------------------------------
# LLM generation: prompts


@dataclass(frozen=True)
class PromptTemplate:
    """A system message, a user message with a ``{passage}`` slot, and optional few-shot examples.

    With a chat template the examples become earlier user/assistant turns; without one everything is
    rendered as plain text. ``{passage}`` is substituted literally (other braces are left alone).
    """

    system: str
    user: str
    examples: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.system, str) or not isinstance(self.user, str):
            raise ValueError("PromptTemplate.system and .user must be strings")
        if self.user.count("{passage}") != 1:
            raise ValueError(f"PromptTemplate.user must contain '{{passage}}' exactly once, got {self.user!r}")
        examples = tuple(tuple(e) for e in self.examples)
        for example in examples:
            if len(example) != 2 or not all(isinstance(x, str) and x.strip() for x in example):
                raise ValueError(f"PromptTemplate.examples must be (passage, query) string pairs, got {example!r}")
        object.__setattr__(self, "examples", examples)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: "PromptTemplate | None" = None,
                  where: str = "prompt") -> "PromptTemplate":
        """A template from a recipe mapping; keys it leaves out come from ``base``."""
        if isinstance(raw, PromptTemplate):
            return raw
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping with system / user / examples, got {raw!r}")
        unknown = sorted(set(raw) - {"system", "user", "examples"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: examples, system, user)")
        values = {"system": base.system if base else "", "user": base.user if base else "",
                  "examples": base.examples if base else ()}
        values.update(raw)
        try:
            return cls(system=values["system"], user=values["user"], examples=tuple(values["examples"] or ()))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def user_message(self, passage: str) -> str:
        return self.user.replace("{passage}", passage)

    def messages(self, passage: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for example_passage, example_query in self.examples:
            out.append({"role": "user", "content": self.user_message(example_passage)})
            out.append({"role": "assistant", "content": example_query})
        out.append({"role": "user", "content": self.user_message(passage)})
        return out

    def plain_text(self, passage: str) -> str:
        parts = [self.system] if self.system else []
        parts += [f"{self.user_message(p)}\n{q}" for p, q in self.examples]
        parts.append(self.user_message(passage) + "\n")
        return "\n\n".join(parts)


# Modelled on CADET's three LLM query types (instructions, "under 20 words", "respond only with the
# plain text ..."), shortened for small models, with caption-style few-shot examples.
_EXAMPLES = (
    "The picture shows a red fire extinguisher hanging on a white wall in a hallway.",
    "A chat screenshot in which classmates discuss splitting the cost of a birthday cake.",
)
DEFAULT_PROMPTS: dict[str, PromptTemplate] = {
    "question": PromptTemplate(
        system="You write a search question that a given passage answers.",
        user=("Read the passage and write one natural question, under 20 words, that the passage "
              "answers. Do not copy long phrases from it. Reply with the question only.\n\n"
              "Passage: {passage}"),
        examples=((_EXAMPLES[0], "Where is the fire extinguisher hung?"),
                  (_EXAMPLES[1], "How did classmates share the cost of the birthday cake?")),
    ),
    "claim": PromptTemplate(
        system="You write a short factual claim supported by a given passage.",
        user=("Read the passage and write one clear claim, under 20 words, that the passage supports "
              "and that stands alone. Do not copy long phrases from it. Reply with the claim only.\n\n"
              "Passage: {passage}"),
        examples=((_EXAMPLES[0], "A red fire extinguisher hangs on a hallway wall."),
                  (_EXAMPLES[1], "Classmates agreed in a chat to split the cost of a birthday cake.")),
    ),
    "title": PromptTemplate(
        system="You write a short title for a given passage.",
        user=("Read the passage and write a short title, under 10 words, that captures what it is about. "
              "Reply with the title only.\n\nPassage: {passage}"),
        examples=((_EXAMPLES[0], "Fire extinguisher on a hallway wall"),
                  (_EXAMPLES[1], "Group chat about a shared birthday cake")),
    ),
}


def default_prompts() -> dict[str, PromptTemplate]:
    return dict(DEFAULT_PROMPTS)


# --------------------------------------------------------------------------------------------------
# LLM generation: configuration


PRECISIONS = ("auto", "fp32", "bf16", "bf16-autocast")


@dataclass(frozen=True)
class LLMConfig:
    """LLM query generation. ``temperature=0`` is greedy; above it, sampling with ``top_p`` and ``seed``.

    ``precision``: "bf16" casts the weights to bfloat16, "bf16-autocast" keeps float32 weights under
    ``torch.autocast``, "fp32" neither; "auto" is "bf16" where ``distill.hardware.bf16_available``
    says the device has bf16 units, else "fp32". Measured on this project's 2-core AMX Xeon
    (SmolLM2-135M, batch 8, 32 new tokens): bf16 weights 2.3x and autocast 1.3x the fp32 speed.
    ``max_query_words`` drops overlong outputs; ``drop_unfinished`` drops outputs that were still
    running when ``max_new_tokens`` ran out (a small model rambling or copying the passage);
    ``max_copied_words`` drops an output that is a verbatim span of its passage longer than that
    many words (None keeps copies).
    """

    model: str = "SmolLM2-135M-Instruct"
    types: tuple[str, ...] = ("question", "claim", "title")
    batch_size: int = 8
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prompts: dict[str, PromptTemplate] = field(default_factory=default_prompts)
    max_passage_tokens: int = 384
    max_query_words: int = 24
    drop_unfinished: bool = True
    max_copied_words: int | None = 8
    device: str | None = None
    precision: Literal["auto", "fp32", "bf16", "bf16-autocast"] = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model).strip():
            raise ValueError(f"LLMConfig.model must be a model name or path, got {self.model!r}")
        types = (self.types,) if isinstance(self.types, str) else tuple(self.types)
        if not types:
            raise ValueError("LLMConfig.types must name at least one query type")
        if len(set(types)) != len(types):
            raise ValueError(f"LLMConfig.types has duplicates: {list(types)}")
        object.__setattr__(self, "types", types)
        if not isinstance(self.prompts, Mapping):
            raise ValueError(f"LLMConfig.prompts must map query type → PromptTemplate, got {self.prompts!r}")
        prompts = dict(self.prompts)
        for name, template in prompts.items():
            if not isinstance(template, PromptTemplate):
                raise ValueError(f"LLMConfig.prompts[{name!r}] must be a PromptTemplate, got {type(template).__name__}")
        object.__setattr__(self, "prompts", prompts)
        missing = [t for t in types if t not in prompts]
        if missing:
            raise ValueError(f"LLMConfig.types {missing} have no prompt template "
                             f"(templates exist for: {', '.join(sorted(prompts))})")
        _check_int("LLMConfig", "batch_size", self.batch_size, 1)
        _check_int("LLMConfig", "max_new_tokens", self.max_new_tokens, 1, 1024)
        _check_int("LLMConfig", "seed", self.seed)
        _check_int("LLMConfig", "max_passage_tokens", self.max_passage_tokens, 8)
        _check_int("LLMConfig", "max_query_words", self.max_query_words, 1)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"LLMConfig.temperature must be a number >= 0, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"LLMConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"LLMConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_copied_words is not None:
            _check_int("LLMConfig", "max_copied_words", self.max_copied_words, 1)
        if not isinstance(self.drop_unfinished, bool):
            raise ValueError(f"LLMConfig.drop_unfinished must be true or false, got {self.drop_unfinished!r}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "llm") -> "LLMConfig":
        """From a recipe mapping; ``prompts`` entries are merged over the default template of their type."""
        raw = dict(raw or {})
        if "prompts" in raw:
            given = raw["prompts"] or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"{where}.prompts: expected a mapping of query type → template")
            prompts = default_prompts()
            for name, spec in given.items():
                prompts[name] = PromptTemplate.from_dict(spec, DEFAULT_PROMPTS.get(name), f"{where}.prompts.{name}")
            raw["prompts"] = prompts
        if isinstance(raw.get("types"), list):
            raw["types"] = tuple(raw["types"])
        return _config_from_dict(cls, raw, where)


# --------------------------------------------------------------------------------------------------
# LLM generation: model loading


def load_causal_lm(name_or_path: str | Path, device: str | None = None):
    """``(model, tokenizer)`` for a registered name, a folder or a ``.gguf`` file. Never downloads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.hardware import default_device
    from distill.models import local_path

    path = local_path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        from distill.importers.gguf import gguf_folder

        path = gguf_folder(path)
    elif path.is_file():
        raise ValueError(f"{path}: a generator is a model folder or a .gguf file")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.to(torch.device(device) if device else default_device()).eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# LLM generation: output cleaning

_LABEL = re.compile(
    r"^(?:(?:here\s+is|here's|sure[,!.]?)\b[^:\n]*:\s*)?"
    r"(?:(?:generated|search|final|short|new|concise|relevant)\s+)?"
    r"(?:question|query|claim|title|keywords?|statement|answer|headline|q|a)\s*\d*\s*[:：]\s*",
    re.IGNORECASE)
_BULLET = re.compile(r"^(?:[-*•#>]+\s*|\d+\s*[.)]\s+)")
_QUOTES = "\"'`“”‘’«»「」『』"
_WORDS = re.compile(r"\w+")
_PREAMBLE = re.compile(r"^(?:here\s+is|here's|sure|certainly|okay|ok)\b.*[:：]$", re.IGNORECASE)


def clean_generation(text: str, max_words: int = 24) -> str:
    """The query in an LLM's reply: its first non-empty line without labels, bullets, markdown or
    quotes. Returns "" when nothing usable is left or the line has more than ``max_words`` words."""
    for line in text.replace("\r", "\n").split("\n"):
        line = line.strip()
        if not line or _PREAMBLE.match(line):
            continue
        previous = None
        while previous != line:
            previous = line
            line = _BULLET.sub("", line).strip()
            line = line.replace("**", "").replace("__", "").strip()
            line = _LABEL.sub("", line).strip()
            if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
                line = line[1:-1].strip()
            elif line[:1] in _QUOTES and line.count(line[0]) == 1:
                line = line[1:].strip()
            elif line[-1:] in _QUOTES and line.count(line[-1]) == 1:
                line = line[:-1].strip()
        line = " ".join(line.split())
        if not line:
            continue
        if len(line.split()) > max_words:
            return ""
        return line
    return ""


# --------------------------------------------------------------------------------------------------
# LLM generation: the generator


class LLMGenerator:
    """Queries of each configured type from a causal LM, one per (passage, type) unless cleaned away.

    ``model`` / ``tokenizer`` may be given (tests, or a model already in memory); otherwise
    ``config.model`` is loaded on first use.
    """

    def __init__(self, config: LLMConfig | None = None, model=None, tokenizer=None) -> None:
        self.config = config or LLMConfig()
        if (model is None) != (tokenizer is None):
            raise ValueError("LLMGenerator: give both model and tokenizer, or neither")
        self._model, self._tokenizer = model, tokenizer
        self._precision: str | None = None  # resolved on first use; the generator sets the model's dtype

    @property
    def precision(self) -> str:
        """The resolved precision: "fp32", "bf16" or "bf16-autocast"."""
        self._load()
        return self._precision

    def _load(self):
        if self._model is None:
            self._model, self._tokenizer = load_causal_lm(self.config.model, self.config.device)
        if self._precision is None:
            import torch

            from distill.hardware import bf16_available

            device = next(self._model.parameters()).device
            precision = self.config.precision
            if precision == "auto":
                precision = "bf16" if bf16_available(device) else "fp32"
            self._model.to(torch.bfloat16 if precision == "bf16" else torch.float32)
            self._precision = precision
        tokenizer = self._tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"{self.config.model}: tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        return self._model, tokenizer

    @property
    def model(self):
        return self._load()[0]

    @property
    def tokenizer(self):
        return self._load()[1]

    def _truncate(self, passage: str) -> str:
        passage = " ".join(passage.split())
        ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_passage_tokens:
            return passage
        return self.tokenizer.decode(ids[: self.config.max_passage_tokens], skip_special_tokens=True)

    def render_prompt(self, query_type: str, passage: str) -> str:
        """The exact text the model is given for ``passage`` (chat template applied when present)."""
        template = self.config.prompts[query_type]
        passage = self._truncate(passage)
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            messages = template.messages(passage)
            try:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 — templates that reject a system role
                if messages[0]["role"] != "system":
                    raise
                merged = [dict(messages[1])] if len(messages) > 1 else []
                merged[0]["content"] = f"{messages[0]['content']}\n\n{merged[0]['content']}"
                return tokenizer.apply_chat_template(merged + messages[2:], tokenize=False,
                                                     add_generation_prompt=True)
        return template.plain_text(passage)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return ids

    def _generate_batch(self, prompts: list[str], batch_index: int) -> list[tuple[str, bool]]:
        """(decoded continuation, finished) per prompt."""
        import torch

        from distill.hardware import autocast

        model, tokenizer = self._load()
        cfg = self.config
        device = next(model.parameters()).device
        encoded = tokenizer(prompts, return_tensors="pt", padding=True,
                            add_special_tokens=not getattr(tokenizer, "chat_template", None))
        encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        eos = sorted(self._eos_ids())
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample,
                                      pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=eos or None)
        if sample:
            kwargs.update(temperature=float(cfg.temperature), top_p=float(cfg.top_p))
        else:  # neutralise sampling defaults a generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode(), \
                autocast(device, self._precision == "bf16-autocast"):
            torch.manual_seed(cfg.seed * 1_000_003 + batch_index)
            output = model.generate(**encoded, **kwargs)
        new = output[:, encoded["input_ids"].shape[1]:]
        results = []
        for row in new.tolist():
            finished = any(t in eos for t in row)
            if finished:
                row = row[: min(i for i, t in enumerate(row) if t in eos)]
            text = tokenizer.decode(row, skip_special_tokens=True)
            results.append((text, finished or "\n" in text.strip()))
        return results

    def _copied(self, query: str, passage: str) -> bool:
        """The whole passage, or a verbatim span of it longer than ``max_copied_words`` words."""
        words = _WORDS.findall(normalize_query(query))
        passage_words = _WORDS.findall(normalize_query(passage))
        if words == passage_words:
            return True
        limit = self.config.max_copied_words
        if limit is None or len(words) <= limit:
            return False
        return f" {' '.join(words)} " in f" {' '.join(passage_words)} "

    def generate(self, passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
        from tqdm.auto import tqdm

        cfg = self.config
        jobs = [(query_type, doc_id, text) for query_type in cfg.types for doc_id, text in passages]
        # batch prompts of similar length (prefill dominates the cost; padding is wasted work),
        # then report in (type, passage) order
        order = sorted(range(len(jobs)), key=lambda i: (cfg.types.index(jobs[i][0]), len(jobs[i][2]), i))
        results: dict[int, SyntheticQuery] = {}
        with tqdm(total=len(jobs), desc="generate queries", unit="query", disable=None, leave=False) as bar:
            for batch_index, first in enumerate(range(0, len(order), cfg.batch_size)):
                batch = order[first: first + cfg.batch_size]
                prompts = [self.render_prompt(jobs[i][0], jobs[i][2]) for i in batch]
                for i, (raw, finished) in zip(batch, self._generate_batch(prompts, batch_index)):
                    query_type, doc_id, text = jobs[i]
                    query = clean_generation(raw, cfg.max_query_words)
                    if query and not (cfg.drop_unfinished and not finished) and not self._copied(query, text):
                        results[i] = SyntheticQuery(query, query_type, doc_id)
                bar.update(len(batch))
        return [results[i] for i in sorted(results)]


__all__ = ["DEFAULT_PROMPTS", "LLMConfig", "LLMGenerator", "PromptTemplate", "clean_generation",
           "default_prompts", "load_causal_lm"]
