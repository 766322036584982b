"""BM25 with pyserini's Lucene, in-process: build an index from (doc id, text) pairs, search it in batches.

Indexing goes through pyserini's ``LuceneIndexer`` (Anserini's ``SimpleIndexer``, a JsonCollection of
``{"id", "contents"}`` documents), searching through ``LuceneSearcher.batch_search``. Both use the
analyzer Anserini picks for the language: ``DefaultEnglishAnalyzer`` (Porter stemmer, Lucene English
stop words) for ``en``, Lucene's ``CJKAnalyzer`` (CJK character bigrams) for ``zh``, and so on. Query
text is analysed, never parsed, so Lucene syntax characters (``? ( : " *``) are harmless.

An index folder holds ``manifest.json`` (what was indexed, with which analyzer and Anserini build) and
``lucene/``. Indexes are written to a temporary sibling and renamed into place, so a reader sees either
no index or a complete one; :meth:`BM25Index.open_or_build` keys them by a hash of the documents and
the language and reuses them across runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from distill import jvm
from distill.atomic import swap_folder

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LUCENE_DIR = "lucene"
FORMAT_VERSION = 1
# Anserini's language-specific analyzers (io.anserini.analysis.AnalyzerMap) plus its English default.
LANGUAGES = frozenset("ar bn da de en es fa fi fr hi hu id it ja ko nl no pl pt ru sv te th tr uk zh".split())


@dataclasses.dataclass(frozen=True)
class BM25Defaults:
    """pyserini's defaults (``LuceneSearcher.set_bm25``): k1=0.9, b=0.4."""

    k1: float = 0.9
    b: float = 0.4
    threads: int = 2
    language: str = "en"
    index_batch: int = 10_000
    search_batch: int = 4_096


DEFAULTS = BM25Defaults()


def _check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported BM25 language {language!r}; Anserini analyzers exist for: "
                         f"{' '.join(sorted(LANGUAGES))}")
    return language


def _checked_docs(docs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, pair in enumerate(docs):
        try:
            doc_id, text = pair
        except (TypeError, ValueError) as e:
            raise ValueError(f"document #{i}: expected a (doc_id, text) pair, got {pair!r:.80}") from e
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise ValueError(f"document #{i}: doc_id must be a non-empty string, got {doc_id!r}")
        if not isinstance(text, str):
            raise ValueError(f"document #{i} ({doc_id}): text must be a string, got {type(text).__name__}")
        if doc_id in seen:
            raise ValueError(f"document #{i}: duplicate doc_id {doc_id!r}")
        seen.add(doc_id)
        out.append((doc_id, text))
    if not out:
        raise ValueError("no documents to index")
    return out


def content_key(docs: Sequence[tuple[str, str]], language: str) -> str:
    """Hash of everything that determines the index: documents, language, Anserini build, layout version."""
    h = hashlib.sha256()
    h.update(f"bm25-v{FORMAT_VERSION}\0{language}\0{jvm.anserini_jar().name}\0".encode())
    for doc_id, text in docs:
        for part in (doc_id, text):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()[:32]


class BM25Index:
    """A Lucene BM25 index over (doc id, text) pairs; ``search`` is a retriever (DESIGN.md)."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.language: str = manifest["language"]
        self.num_docs: int = manifest["num_indexed"]
        self.from_cache = False  # set by open_or_build when an existing index was reused
        self._searcher = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BM25Index({str(self.path)!r}, language={self.language!r}, num_docs={self.num_docs})"

    # ------------------------------------------------------------------ building and opening
    @classmethod
    def build(cls, docs: Iterable[tuple[str, str]], index_dir: Path, language: str = DEFAULTS.language,
              threads: int = DEFAULTS.threads, overwrite: bool = False) -> "BM25Index":
        """Write a Lucene index of ``docs`` to ``index_dir`` (atomically: temp folder, then rename)."""
        language = _check_language(language)
        docs = _checked_docs(docs)
        return cls._build(docs, Path(index_dir), language, threads, overwrite,
                          key=content_key(docs, language))

    @classmethod
    def _build(cls, docs: list[tuple[str, str]], index_dir: Path, language: str, threads: int,
               overwrite: bool, key: str) -> "BM25Index":
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if index_dir.exists() and not overwrite:
            raise FileExistsError(f"{index_dir} already exists (pass overwrite=True to replace it)")
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.tmp-", dir=index_dir.parent))
        try:
            indexed = _write_lucene(docs, tmp / LUCENE_DIR, language, threads)
            manifest = {
                "format": FORMAT_VERSION, "key": key, "language": language,
                "anserini": jvm.anserini_jar().name, "num_docs": len(docs), "num_indexed": indexed,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            if overwrite or not index_dir.exists():
                swap_folder(tmp, index_dir)
            else:
                os.rename(tmp, index_dir)  # fails if another process got there first: handled by the caller
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("BM25 index (%s, %d docs) written to %s", language, indexed, index_dir)
        return cls(index_dir, manifest)

    @classmethod
    def open(cls, index_dir: Path) -> "BM25Index":
        index_dir = Path(index_dir)
        manifest_path = index_dir / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{manifest_path}: no BM25 index here (missing {MANIFEST})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest_path}: line {e.lineno}: not valid JSON ({e.msg})") from e
        for field in ("format", "language", "num_indexed"):
            if field not in manifest:
                raise ValueError(f"{manifest_path}: field {field!r} is missing")
        if manifest["format"] != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: field 'format' is {manifest['format']}, expected {FORMAT_VERSION}")
        if not (index_dir / LUCENE_DIR).is_dir():
            raise FileNotFoundError(f"{index_dir / LUCENE_DIR}: Lucene index folder is missing")
        return cls(index_dir, manifest)

    @classmethod
    def open_or_build(cls, docs: Iterable[tuple[str, str]], cache_root: Path,
                      language: str = DEFAULTS.language, threads: int = DEFAULTS.threads) -> "BM25Index":
        """The cached index of ``docs`` under ``cache_root/<content key>``, built on first use."""
        language = _check_language(language)
        docs = _checked_docs(docs)
        key = content_key(docs, language)
        index_dir = Path(cache_root) / f"{language}-{key}"
        if (index_dir / MANIFEST).is_file():
            index = cls.open(index_dir)
            if index.manifest.get("key") == key:
                index.from_cache = True
                log.info("BM25 index reused from %s", index_dir)
                return index
            log.warning("%s: key mismatch in %s, rebuilding", index_dir, MANIFEST)
            return cls._build(docs, index_dir, language, threads, overwrite=True, key=key)
        try:
            return cls._build(docs, index_dir, language, threads, overwrite=index_dir.exists(), key=key)
        except OSError:
            # Another process may have renamed the same index into place first.
            if (index_dir / MANIFEST).is_file():
                index = cls.open(index_dir)
                index.from_cache = True
                return index
            raise

    # ------------------------------------------------------------------ searching
    def _get_searcher(self):
        if self._searcher is None:
            lucene = jvm.import_pyserini("pyserini.search.lucene")
            searcher = lucene.LuceneSearcher(str(self.path / LUCENE_DIR))
            if self.language != "en":  # English is the searcher's default analyzer
                searcher.set_language(self.language)
            self._searcher = searcher
        return self._searcher

    def search(self, queries: list[str], k: int, k1: float = DEFAULTS.k1, b: float = DEFAULTS.b,
               threads: int = DEFAULTS.threads) -> list[list[tuple[str, float]]]:
        """Top-``k`` (doc id, BM25 score) per query, best first; one list per query, in query order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        queries = list(queries)
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise ValueError(f"query #{i}: expected a string, got {type(q).__name__}")
        out: list[list[tuple[str, float]]] = []
        with self._lock:
            searcher = self._get_searcher()
            searcher.set_bm25(float(k1), float(b))
            step = DEFAULTS.search_batch
            for start in range(0, len(queries), step):
                chunk = queries[start:start + step]
                qids = [str(i) for i in range(len(chunk))]
                hits = searcher.batch_search(chunk, qids, k=int(k), threads=int(threads))
                out.extend([(h.docid, _float32_value(h.score)) for h in hits.get(qid, ())] for qid in qids)
        return out

    def close(self) -> None:
        with self._lock:
            if self._searcher is not None:
                self._searcher.close()
                self._searcher = None


def _float32_value(score: float) -> float:
    """Lucene scores are float32: keep their shortest decimal form (0.4856, not 0.48559999465942383)."""
    return float(str(np.float32(score)))


def _write_lucene(docs: list[tuple[str, str]], lucene_dir: Path, language: str, threads: int) -> int:
    """Index ``docs`` into ``lucene_dir``; returns how many Anserini accepted (empty texts are skipped)."""
    index_module = jvm.import_pyserini("pyserini.index.lucene")
    args = ["-index", str(lucene_dir), "-language", language]
    indexer = index_module.LuceneIndexer(args=args, threads=threads)
    added = 0
    try:
        step = DEFAULTS.index_batch
        for start in range(0, len(docs), step):
            batch = [json.dumps({"id": d, "contents": t}, ensure_ascii=False) for d, t in docs[start:start + step]]
            # SimpleIndexer.addRawDocuments returns how many were indexed (pyserini's wrapper drops it).
            added += int(indexer.object.addRawDocuments(batch))
    finally:
        indexer.object.close(True)  # commit and merge to one segment
    skipped = len(docs) - added
    if skipped:
        empty = sum(1 for _, t in docs if not t.strip())
        log.warning("BM25 index: %d of %d documents were not indexed (%d have empty text)",
                    skipped, len(docs), empty)
        if empty < skipped:
            raise RuntimeError(f"Anserini rejected {skipped - empty} non-empty documents while indexing "
                               f"{lucene_dir} (see the Java log above)")
    return added
