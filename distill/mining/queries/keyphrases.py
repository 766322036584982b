"""English keyword queries through KeyBERT (a maintained library), beside the hand-written chunker.

KeyBERT embeds a passage and its candidate n-grams (scikit-learn's ``CountVectorizer``) with a
sentence-transformers model and keeps the n-grams closest to the passage (optionally diversified
with maximal marginal relevance). Its default model is all-MiniLM-L6-v2, which this project ships
as a local folder; the model is always resolved through :func:`distill.models.local_path`, never
a hub id. The n-grams come back lower-cased and without punctuation; each is mapped back to its
span in the passage (original casing, e.g. "WeChat group chat") when one exists.

Selected in a mining recipe as ``queries.generate.keybert: {...}``; its queries carry the type
``keybert`` so an ablation can compare it with the chunker's ``keywords`` list for list.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from distill.mining.queries import SyntheticQuery, _check_int, _config_from_dict, normalize_query


@dataclass(frozen=True)
class KeyBERTConfig:
    """KeyBERT keyphrases: ``per_passage`` n-grams of ``min_words``..``max_words`` words.

    ``use_mmr`` with ``diversity`` (0 = relevance only, 1 = diversity only) avoids near-duplicate
    phrases ("gas meter", "gas meter mounted"). ``caption_stop_words`` adds the words a caption uses
    to talk about the picture ("picture", "shows", "screenshot") to scikit-learn's English stop words.
    """

    model: str = "all-MiniLM-L6-v2"
    per_passage: int = 2
    min_words: int = 1
    max_words: int = 3
    use_mmr: bool = True
    diversity: float = 0.5
    caption_stop_words: bool = True
    batch_size: int = 64
    chunk: int = 256  # passages per KeyBERT call (its vocabulary is built per call)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"KeyBERTConfig.model must be a model name or folder, got {self.model!r}")
        _check_int("KeyBERTConfig", "per_passage", self.per_passage, 1)
        _check_int("KeyBERTConfig", "min_words", self.min_words, 1)
        _check_int("KeyBERTConfig", "max_words", self.max_words, 1, 4)
        if self.min_words > self.max_words:
            raise ValueError(f"KeyBERTConfig.min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        _check_int("KeyBERTConfig", "batch_size", self.batch_size, 1)
        _check_int("KeyBERTConfig", "chunk", self.chunk, 1)
        for name in ("use_mmr", "caption_stop_words"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"KeyBERTConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.diversity, bool) or not isinstance(self.diversity, (int, float)) \
                or not 0 <= self.diversity <= 1:
            raise ValueError(f"KeyBERTConfig.diversity must be in [0, 1], got {self.diversity!r}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "keybert") -> "KeyBERTConfig":
        return _config_from_dict(cls, raw, where)


# clause breaks (a phrase never spans them) and words (hyphens and apostrophes inside a word kept)
_CLAUSE = re.compile(r"[.,;:!?()\[\]{}\"“”‘’«»/|]+\s*|\s[-–—]\s|'\s|\s'")
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")


def passage_span(phrase: str, text: str) -> str:
    """The span of ``text`` whose words are ``phrase``'s (case-insensitive, any non-word gap between
    them), or ``phrase`` itself when there is none."""
    words = phrase.split()
    pattern = r"(?<!\w)" + r"\W+".join(re.escape(w) for w in words) + r"(?!\w)"
    match = re.search(pattern, text, flags=re.IGNORECASE)
    return " ".join(match.group(0).split()) if match else phrase


class KeyBERTGenerator:
    """``per_passage`` KeyBERT keyphrases per passage, never the whole passage."""

    query_type = "keybert"

    def __init__(self, config: KeyBERTConfig | None = None, model=None) -> None:
        """``model``: a sentence-transformers model already in memory (else ``config.model`` is loaded)."""
        self.config = config or KeyBERTConfig()
        self._model = model
        self._keybert = None

    def _load(self):
        if self._keybert is None:
            from keybert import KeyBERT

            if self._model is None:
                from sentence_transformers import SentenceTransformer

                from distill.models import local_path

                self._model = SentenceTransformer(str(local_path(self.config.model)), device="cpu")
            self._keybert = KeyBERT(model=self._model)
        return self._keybert

    def _vectorizer(self):
        """A ``CountVectorizer`` whose features are passage spans: n-grams of consecutive words inside
        one clause that neither start nor end with a stop word. (KeyBERT's default drops stop words
        first, so "QR code and mobile" yields the non-span "qr code mobile".)"""
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

        stop = set(ENGLISH_STOP_WORDS)
        if self.config.caption_stop_words:
            from distill.mining.queries.keywords import _EN_CAPTION

            stop |= _EN_CAPTION
        low, high = self.config.min_words, self.config.max_words

        def spans(text: str) -> list[str]:
            out = []
            for clause in _CLAUSE.split(text.lower()):
                words = _WORD.findall(clause)
                for n in range(low, high + 1):
                    for i in range(len(words) - n + 1):
                        gram = words[i: i + n]
                        if gram[0] not in stop and gram[-1] not in stop and not gram[0].isdigit():
                            out.append(" ".join(gram))
            return out

        return CountVectorizer(analyzer=spans)

    def keyphrases(self, texts: list[str]) -> list[list[str]]:
        """Up to ``per_passage`` phrases per text, best first, as spans of the text where possible."""
        cfg = self.config
        keybert = self._load()
        out: list[list[str]] = []
        for first in range(0, len(texts), cfg.chunk):
            chunk = texts[first: first + cfg.chunk]
            # ask for a few spare phrases: some may equal the whole passage or repeat another's words
            found = keybert.extract_keywords(
                chunk, vectorizer=self._vectorizer(), top_n=cfg.per_passage + 3, use_mmr=cfg.use_mmr, diversity=float(cfg.diversity))
            if len(chunk) == 1 and (not found or isinstance(found[0], tuple)):
                found = [found]  # KeyBERT returns a flat list for a single document
            for text, pairs in zip(chunk, found):
                whole = normalize_query(text).rstrip(".!?")
                phrases: list[str] = []
                for phrase, _score in pairs or []:
                    span = passage_span(phrase, text)
                    if normalize_query(span) == whole or normalize_query(span) in map(normalize_query, phrases):
                        continue
                    phrases.append(span)
                    if len(phrases) == cfg.per_passage:
                        break
                out.append(phrases)
        return out

    def generate(self, passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
        phrases = self.keyphrases([text for _, text in passages]) if passages else []
        return [SyntheticQuery(p, self.query_type, doc_id)
                for (doc_id, _), found in zip(passages, phrases) for p in found]


__all__ = ["KeyBERTConfig", "KeyBERTGenerator", "passage_span"]
