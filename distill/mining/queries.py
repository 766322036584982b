"""Synthetic training queries from corpus passages; every query carries its ``query_type``.

Two kinds of generator share one protocol, ``generate([(doc_id, text), ...]) -> [SyntheticQuery]``:

* ``keywords`` — an offline extractor of short entity/event phrases, the shape of CapRetrieval's own
  queries ("gas meter", "WeChat feature update", "燃气表"). English goes through a POS-free chunker
  (stop words, a small verb lexicon and suffix heuristics cut a caption into noun-like runs; the
  sub-spans of a run are scored by salience, position and length); Chinese goes through jieba's POS
  tagger (runs of nouns / place names / verbal nouns, weighted by jieba's IDF table). A phrase is
  always a span of the passage, never the whole passage. Deterministic: ties are broken by a RNG
  seeded with ``(seed, doc_id, text)``, so a passage's phrases do not depend on its batch.
* ``llm`` — ``question`` / ``claim`` / ``title`` queries (the CADET query types, Tamber et al. 2025)
  from any causal LM through ``transformers`` generation: editable prompt templates, the tokenizer's
  chat template when it has one, batched left-padded generation, cleaned one-line outputs.

Configuration is data: one validated dataclass per generator; ``build_generators`` turns a
recipe's ``queries.generate`` mapping into generators. ``drop_eval_overlap`` removes generated
queries that equal an evaluation query (and duplicate (query, source) pairs).

A ``.gguf`` generator (the packaged SmolLM2) is dequantised by transformers once and kept as an
ordinary Hugging Face folder under the cache root: parsing the GGUF's metadata, tokenizer and
4-bit tensors takes one to two minutes on a small CPU, the converted folder loads in seconds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# the common API


@dataclass(frozen=True)
class SyntheticQuery:
    """One generated training query and the passage it was generated from."""

    query: str
    query_type: str
    source_id: str


@runtime_checkable
class QueryGenerator(Protocol):
    def generate(self, passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
        """Queries for ``(doc_id, text)`` passages, in passage order within each query type."""
        ...


def normalize_query(text: str) -> str:
    """The comparison form of a query: NFKC, case-folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedupe_queries(queries: Iterable[SyntheticQuery]) -> list[SyntheticQuery]:
    """First occurrence of each (normalised query, source) pair, order kept."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for q in queries:
        key = (normalize_query(q.query), q.source_id)
        if key not in seen:
            seen.add(key)
            kept.append(q)
    return kept


def drop_eval_overlap(queries: Iterable[SyntheticQuery],
                      eval_queries: Iterable[str]) -> tuple[list[SyntheticQuery], int]:
    """Drop generated queries equal to an evaluation query (case-insensitive, white space collapsed).

    Returns the kept queries (also deduplicated on (query, source)) and the number dropped for being
    an evaluation query; duplicates are removed without being counted.
    """
    banned = {normalize_query(q) for q in eval_queries}
    kept, dropped = [], 0
    for q in dedupe_queries(queries):
        if normalize_query(q.query) in banned:
            dropped += 1
        else:
            kept.append(q)
    return kept, dropped


def _check_int(owner: str, name: str, value: Any, minimum: int | None = None,
               maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}.{name} must be <= {maximum}, got {value}")


def _config_from_dict(cls, raw: Mapping[str, Any] | None, where: str):
    """``cls(**raw)`` with unknown keys reported by name (a recipe typo is an error, not a default)."""
    raw = dict(raw or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        return cls(**raw)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


# --------------------------------------------------------------------------------------------------
# keywords: configuration


@dataclass(frozen=True)
class KeywordConfig:
    """Offline keyword queries. ``language='auto'`` decides per passage (CJK characters → zh)."""

    language: Literal["en", "zh", "auto"] = "auto"
    per_passage: int = 2
    min_words: int = 1
    max_words: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.language not in ("en", "zh", "auto"):
            raise ValueError(f"KeywordConfig.language must be 'en', 'zh' or 'auto', got {self.language!r}")
        _check_int("KeywordConfig", "per_passage", self.per_passage, 1)
        _check_int("KeywordConfig", "min_words", self.min_words, 1)
        _check_int("KeywordConfig", "max_words", self.max_words, 1, 4)
        if self.min_words > self.max_words:
            raise ValueError(f"KeywordConfig.min_words ({self.min_words}) must be <= max_words "
                             f"({self.max_words})")
        _check_int("KeywordConfig", "seed", self.seed)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "keywords") -> "KeywordConfig":
        return _config_from_dict(cls, raw, where)


# --------------------------------------------------------------------------------------------------
# keywords: English word lists

_EN_FUNCTION = set("""
a about above across after afterwards again against all almost alone along already also although
always am among amongst an and another any anybody anyone anything anyway anywhere are around as at
be because been before beforehand behind being below beside besides between beyond both but by can
cannot could did do does doing done down during each either else elsewhere enough etc even ever
every everybody everyone everything everywhere except few for from further had has have having he
hence her here hers herself him himself his how however i if in inside instead into is it its itself
just least less like likely many may me meanwhile might mine more moreover most mostly much must my
myself namely neither never nevertheless no nobody none nor not nothing now nowhere of off often on
once one only onto or other others otherwise our ours ourselves out outside over own per perhaps
please quite rather really same shall she should since so some somebody someone something sometimes
somewhere still such than that the their theirs them themselves then there thereafter thereby
therefore these they this those though through throughout thus to together too toward towards under
underneath unless until up upon us very via was we well were what whatever when whenever where
whereas wherever whether which while who whoever whole whom whose why will with within without would
yet you your yours yourself yourselves let lets can't won't don't doesn't didn't isn't aren't wasn't
weren't hasn't haven't it's that's there's here's what's who's i'm you're we're they're cannot
indoors outdoors upstairs downstairs abroad away ahead overhead nearby currently recently
easily happily heavily busily readily steadily temporarily necessarily primarily ordinarily
""".split())

# Words a caption uses to talk about the picture rather than its content.
_EN_CAPTION = set("""
image images picture pictures photo photos photograph photographs screenshot screenshots snapshot
illustration shows showing shown showed depicts depict depicting depicted displays displaying
displayed features featuring featured appears appear appearing visible seen see seems seem looks
look looking background foreground scene left right side sides top bottom middle center centre front
back next near nearby various several numerous multiple different certain particular overall
including includes include included contains contain containing text texts content contents caption
information detail details view close-up closeup shot area part parts piece pieces way thing things
type types kind kinds variety example form manner use time times total amount amounts
level purpose fact case aspect sense number numbers item items object objects element elements
present presents presented presenting state states stating stated indicating indicates indicate
indicated reading reads read says said written writes write mentioned mentions mention describes
describing described possibly probably likely apparently clearly mainly mostly approximately
""".split())

_EN_VERB_BASES = """
add allow announce appear arrive ask attach become begin believe belong bring build buy cancel carry
cause celebrate choose come compare complete consider consist contain continue create decide
decorate depict describe determine develop discover discuss eat emphasize emphasise encourage enjoy
ensure enter establish exist expand explain express extend fall feel find follow forget get give go
grow happen hang hear help hold hope hug imagine implement improve include indicate install
introduce involve keep know learn lie locate make mean meet mention mount obtain occur own pay
perform prepare prevent promote propose protect provide publish pull put raise reach realize
receive recommend reduce refuse remain remember remind remove replace require reveal say see seek
seem sell send serve sit situate solve speak spend stay stipulate succeed suffer suggest surround
take teach tell tend think try understand urge wait want warn wear win wish worry adjust affect
achieve apply hit launch
""".split()

_EN_IRREGULAR = set("""
made took taken gave given got gotten went gone came seen saw said told held stood sat wore worn
lay lain lying dying tying hung brought bought sold paid ate eaten wrote written kept found began begun met ran sent
spent won felt thought became knew known grew grown fell fallen chose chosen heard understood
""".split())

# -ing / -ed words that are nouns or adjectives in captions (never treated as verbs).
_EN_ING_NOUNS = set("""
building buildings wedding weddings painting paintings clothing ceiling ceilings morning mornings
evening evenings ring rings king kings thing things string strings spring springs wing wings
meeting meetings earring earrings pudding dumpling dumplings housing training stuffing parking
swimming shopping spring sibling siblings awning awnings railing railings lighting frosting icing
filling fillings topping toppings seasoning dressing bedding sling seating heating roofing flooring
landing listing listings setting settings recording recordings drawing drawings offering
beginning ending crossing crossings opening openings spelling warning warnings heading headings
feeling feelings belongings surroundings savings earnings findings greeting greetings marking
markings packaging booking bookings sibling outing pudding wording posting postings rating
ratings ranking rankings hiking camping fishing skiing boating sailing running cycling jogging
dancing singing cooking baking knitting gardening programming marketing banking engineering
advertising printing clothing footing ceiling lightning morning evening something anything nothing
everything bring sing sting swing thing king ring wing ping ding
""".split())
_EN_ED_NOUNS = set("""
bed beds red shed seed seeds speed speeds feed feeds need needs hundred hundreds bread breed
breeds reed weed weeds sled steed creed greed deed deeds tweed sacred wicked naked rugged ragged
kindred hatred shred shreds embed embedded
""".split())

_EN_ADJECTIVES = set("""
new old big small large little huge tiny high low upper lower special main major minor same
white black red blue green yellow brown gray grey pink purple golden silver dark bright light
beautiful cute young tall long short full empty open clear average daily weekly monthly annual
public private local national international global general common simple modern traditional
ancient famous popular happy sad good bad best better great nice fine hot cold warm cool fresh
wet dry soft hard heavy clean dirty early late recent current latest first second third last
final free available possible important necessary real true false wide narrow deep thick thin
round square flat straight single double various whole entire own related based specific
chinese english american japanese korean french german british european asian western eastern
northern southern cheap expensive rich poor strong weak quiet loud busy easy difficult
""".split())

_EN_NUMBER_WORDS = set("two three four five six seven eight nine ten eleven twelve thirteen fifteen "
                        "twenty thirty forty fifty hundred hundreds thousand thousands million millions "
                        "billion billions dozen dozens half".split())
# "a lot of", "a pair of": the noun before "of" only counts things
_EN_QUANTIFIERS = set("lot lots pile piles bunch bunches couple pair pairs group groups row rows set sets "
                      "series plenty bit bits handful stack stacks kind sort".split())
_EN_PICTURE_SUBJECTS = set("images pictures photos photographs screenshots".split())
_EN_DETERMINERS = set("a an the this that these those its their his her our my your some several "
                      "many any each every no another".split())
_EN_MODALS = set("to will would can could should shall may might must not never also "
                 "don't doesn't didn't won't can't".split())

_EN_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’\-./][A-Za-z0-9]+)*")
_EN_NUMBER = re.compile(r"[0-9][0-9.,:/\-]*[%]?$")
# "-ily" is left out: family, lily; the common -ily adverbs are in _EN_FUNCTION
_EN_ADVERB_SUFFIXES = ("ally", "ously", "ively", "fully", "ently", "antly", "edly", "ingly", "ately",
                       "ssly", "rly", "tly")
_EN_ADJ_SUFFIXES = ("ous", "ful", "able", "ible", "less", "ish")


def _inflections(base: str) -> set[str]:
    forms = {base}
    if base.endswith(("s", "sh", "ch", "x", "z")):
        forms.add(base + "es")
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "i", "o", "u"):
        forms.add(base[:-1] + "ies")
    else:
        forms.add(base + "s")
    if base.endswith("e"):
        forms |= {base + "d", base[:-1] + "ing"}
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "i", "o", "u"):
        forms |= {base[:-1] + "ied", base + "ing"}
    else:
        forms |= {base + "ed", base + "ing", base + base[-1] + "ed", base + base[-1] + "ing"}
    return forms


_EN_VERBS = set().union(*(_inflections(b) for b in _EN_VERB_BASES)) | _EN_IRREGULAR

# token classes
_STOP, _VERB, _NOUN, _ADJ, _NUM, _ING = "stop", "verb", "noun", "adj", "num", "ing"


@dataclass
class _Token:
    text: str
    start: int
    end: int
    clause: int
    lower: str = ""
    cls: str = _NOUN
    proper: bool = False


def _en_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    clause, prev_end = 0, 0
    for m in _EN_TOKEN.finditer(text):
        gap = text[prev_end:m.start()]
        if tokens and gap.strip():  # punctuation between two words ends the clause
            clause += 1
        word = m.group().strip(".-/")
        if not word:
            continue
        start = m.start() + m.group().index(word)
        tokens.append(_Token(word, start, start + len(word), clause, word.lower().replace("’", "'")))
        prev_end = m.end()
    return tokens


def _sentence_initial(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'“‘([")
    return not before or before[-1] in ".!?:;\n"


def _classify_en(text: str, tokens: list[_Token]) -> None:
    for i, tok in enumerate(tokens):
        w = tok.lower
        capitalised = tok.text[:1].isupper() or any(c.isupper() for c in tok.text[1:])
        tok.proper = capitalised and not _sentence_initial(text, tok.start) and w not in _EN_FUNCTION
        if any(c.isupper() for c in tok.text[1:]) and tok.text[:1].islower():
            tok.proper = True  # iPhone, eBay
        if w in _EN_FUNCTION or len(w) == 1 and not w.isdigit():
            tok.cls = _STOP
        elif tok.proper:
            tok.cls = _NOUN
        elif w in _EN_CAPTION:
            tok.cls = _STOP
        elif _EN_NUMBER.match(w) or w in _EN_NUMBER_WORDS:
            tok.cls = _NUM
        elif w.endswith(_EN_ADVERB_SUFFIXES) and len(w) > 5:
            tok.cls = _STOP
        elif w in _EN_VERBS:
            tok.cls = _VERB
        elif w.endswith("ing") and len(w) > 4 and w not in _EN_ING_NOUNS and "-" not in w:
            tok.cls = _ING
        elif (w.endswith("ed") and len(w) > 4 and "-" not in w and w not in _EN_ED_NOUNS
              and w not in _EN_ADJECTIVES):
            tok.cls = _VERB
        elif w in _EN_ADJECTIVES or (w.endswith(_EN_ADJ_SUFFIXES) and len(w) > 5):
            tok.cls = _ADJ
        else:
            tok.cls = _NOUN
    # context rules, on the lexical classes above
    for i, tok in enumerate(tokens):
        if tok.cls not in (_NOUN, _ING) or tok.proper:
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].clause == tok.clause else None
        prv = tokens[i - 1] if i > 0 and tokens[i - 1].clause == tok.clause else None
        if nxt is not None and nxt.lower == "of" and tok.lower in _EN_QUANTIFIERS:
            tok.cls = _STOP
        # "the images show ...": the caption's own verb
        elif prv is not None and prv.lower in _EN_PICTURE_SUBJECTS and tok.lower in ("show", "display"):
            tok.cls = _VERB
        # a word taking a determiner as object is a verb ("cancels the policy", "shows a meter")
        elif nxt is not None and nxt.lower in _EN_DETERMINERS and nxt.lower not in ("that", "no"):
            tok.cls = _VERB
        # after "to" / a modal, a lower-case word is a verb ("will adjust", "to purchase homes")
        elif prv is not None and prv.lower in _EN_MODALS and tok.cls == _NOUN and tok.text.islower():
            if nxt is not None and nxt.cls in (_NOUN, _ADJ, _ING) or nxt is None:
                tok.cls = _VERB
        # "a waterfall cascades down": an -s word after a singular subject, ending the phrase
        elif (prv is not None and tok.cls == _NOUN and prv.cls == _NOUN and not prv.proper
              and tok.lower.endswith("s") and not tok.lower.endswith(("ss", "us", "is", "ies"))
              and not prv.lower.endswith("s") and i >= 2 and tokens[i - 2].clause == tok.clause
              and tokens[i - 2].lower in ("a", "an", "this", "each", "every", "one")
              and (nxt is None or nxt.cls in (_STOP, _NUM))):
            tok.cls = _VERB
    for i, tok in enumerate(tokens):
        if tok.cls != _ING:
            continue
        # an -ing word modifies a following noun after a determiner/adjective ("the swimming pool");
        # anywhere else it is a verb ("when converting PDF", "a man running")
        nxt = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].clause == tok.clause else None
        prv = tokens[i - 1] if i > 0 and tokens[i - 1].clause == tok.clause else None
        modifier = (nxt is not None and nxt.cls in (_NOUN, _ADJ)
                    and (prv is None or prv.lower in _EN_DETERMINERS or prv.cls in (_ADJ, _NUM)))
        tok.cls = _ADJ if modifier else _VERB


_EN_LENGTH_BONUS = {1: 0.0, 2: 0.45, 3: 0.3, 4: 0.1}


@dataclass(frozen=True)
class _Candidate:
    score: float
    start: int
    phrase: str
    run: int                 # which noun-like run of the passage it is a span of
    words: frozenset[str]    # its words, lower-cased


def _en_candidates(text: str, min_words: int, max_words: int) -> list[_Candidate]:
    """Every admissible span of a noun-like run, scored."""
    tokens = _en_tokens(text)
    _classify_en(text, tokens)
    counts: dict[str, int] = {}
    for tok in tokens:
        if tok.cls == _NOUN:
            counts[tok.lower] = counts.get(tok.lower, 0) + 1
    runs: list[list[_Token]] = []
    previous_in_run = False
    for tok in tokens:
        in_run = tok.cls in (_NOUN, _ADJ, _NUM)
        if in_run and previous_in_run and runs[-1][-1].clause == tok.clause:
            runs[-1].append(tok)
        elif in_run:
            runs.append([tok])
        previous_in_run = in_run
    n_content = sum(1 for t in tokens if t.cls != _STOP)
    length = max(len(text), 1)
    out: list[_Candidate] = []
    for run_id, run in enumerate(runs):
        for i in range(len(run)):
            for j in range(i + min_words, min(i + max_words, len(run)) + 1):
                span = run[i:j]
                first, last = span[0], span[-1]
                if first.cls == _NUM or last.cls != _NOUN or last.lower.endswith(("'s", "’s")):
                    continue
                if len(span) == n_content and len(span) > 1:
                    continue  # the whole passage is not a query
                weights = []
                for t in span:
                    w = 1.0 if t.cls == _NOUN else 0.6
                    if t.proper:
                        w += 0.5
                    if t.cls == _NOUN:
                        w += 0.25 * min(counts.get(t.lower, 1) - 1, 3)
                    w += 0.2 * min(len(t.text), 12) / 12
                    weights.append(w)
                score = sum(weights) / len(weights) + _EN_LENGTH_BONUS.get(len(span), 0.0)
                if j == len(run):
                    score += 0.2  # ends at the head of its noun phrase
                if i == 0:
                    score += 0.1  # starts at the beginning of its noun phrase
                if i == 0 and j == len(run):
                    score += 0.25  # the whole noun phrase
                if len(span) == 1 and len(last.text) <= 3 and not last.proper:
                    score -= 0.3
                score += 0.35 * (1 - first.start / length)  # captions name their subject first
                out.append(_Candidate(score, first.start, text[first.start:last.end], run_id,
                                      frozenset(t.lower for t in span)))
    return out


# --------------------------------------------------------------------------------------------------
# keywords: Chinese (jieba)

_ZH_NOUN_FLAGS = ("n", "nr", "nr1", "nr2", "nrj", "nrf", "nrt", "nrfg", "ns", "nsf", "nt", "nz", "nl",
                  "ng", "nw", "vn", "j", "eng")
_ZH_MODIFIER_FLAGS = ("a", "b", "ag", "an")
_ZH_STOP = set("""
图片 图中 图像 照片 画面 截图 图示 显示 展示 这张 一张 一个 一些 一种 内容 文字 文本 上面 下面 旁边 中间 左边 右边
左侧 右侧 上方 下方 背景 前景 其中 包括 情况 方面 时候 东西 部分 信息 页面 样子 地方 人们 这里 那里 可能 其他
描述 说明 提到 标注 时 http https www com html
""".split())
_ZH_LENGTH_BONUS = {1: 0.0, 2: 0.4, 3: 0.3, 4: 0.1}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

_jieba_ready = False


def _jieba():
    global _jieba_ready
    import jieba
    import jieba.analyse  # noqa: F401  (loads the IDF table)
    import jieba.posseg

    if not _jieba_ready:
        jieba.setLogLevel(logging.WARNING)
        _jieba_ready = True
    return jieba


def _zh_candidates(text: str, min_words: int, max_words: int) -> list[_Candidate]:
    jieba = _jieba()
    tfidf = jieba.analyse.default_tfidf
    idf, median = tfidf.idf_freq, tfidf.median_idf
    words: list[tuple[str, str, int]] = []  # (word, flag, offset)
    offset = 0
    for pair in jieba.posseg.cut(text):
        start = text.find(pair.word, offset)
        start = offset if start < 0 else start
        words.append((pair.word, pair.flag, start))
        offset = start + len(pair.word)
    runs: list[list[tuple[str, str, int]]] = []
    prev_end = -1
    for word, flag, start in words:
        content = (flag in _ZH_NOUN_FLAGS or flag in _ZH_MODIFIER_FLAGS) and word not in _ZH_STOP \
            and word.strip() and not word.isdigit()
        if content and runs and prev_end == start:
            runs[-1].append((word, flag, start))
        elif content:
            runs.append([(word, flag, start)])
        prev_end = start + len(word) if content else -1
    n_content = sum(len(r) for r in runs)
    length = max(len(text), 1)
    counts: dict[str, int] = {}
    for run in runs:
        for word, _, _ in run:
            counts[word] = counts.get(word, 0) + 1
    out = []
    for run_id, run in enumerate(runs):
        for i in range(len(run)):
            for j in range(i + min_words, min(i + max_words, len(run)) + 1):
                span = run[i:j]
                if span[-1][1] not in _ZH_NOUN_FLAGS:
                    continue
                if len(span) == 1 and (span[0][1] == "ng" or span[0][1] == "eng" and len(span[0][0]) < 3):
                    continue  # a bare noun morpheme ("晨") or a stray Latin fragment
                if len(span) == n_content and len(span) > 1:
                    continue
                start = span[0][2]
                phrase = text[start:span[-1][2] + len(span[-1][0])]
                if len(phrase) > 12:
                    continue
                weights = [min(idf.get(w, median) / median, 2.0) + 0.25 * min(counts[w] - 1, 3)
                           + (0.15 if f in ("ns", "nr", "nt", "nz", "j", "eng") else 0.0)
                           - (0.3 if len(w) == 1 else 0.0)
                           for w, f, _ in span]
                score = sum(weights) / len(weights) + _ZH_LENGTH_BONUS.get(len(span), 0.0)
                if j == len(run):
                    score += 0.2
                if i == 0:
                    score += 0.1
                if i == 0 and j == len(run):
                    score += 0.25
                score += 0.35 * (1 - start / length)
                out.append(_Candidate(score, start, phrase, run_id, frozenset(w for w, _, _ in span)))
    return out


def detect_language(text: str) -> Literal["en", "zh"]:
    """'zh' when CJK characters make up at least a fifth of the letters, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    return "zh" if cjk and cjk * 5 >= cjk + latin else "en"


class KeywordGenerator:
    """Short entity/event phrases (spans of the passage), ``per_passage`` of them, no two overlapping."""

    query_type = "keywords"

    def __init__(self, config: KeywordConfig | None = None) -> None:
        self.config = config or KeywordConfig()

    def keywords(self, text: str, doc_id: str = "") -> list[str]:
        cfg = self.config
        language = detect_language(text) if cfg.language == "auto" else cfg.language
        extract = _zh_candidates if language == "zh" else _en_candidates
        candidates = extract(text, cfg.min_words, cfg.max_words)
        rng = random.Random(f"{cfg.seed}\x1f{doc_id}\x1f{text}")  # str seeds hash with SHA-512: stable
        jitter = [rng.random() for _ in candidates]  # seeded order among equal scores
        order = sorted(range(len(candidates)), key=lambda i: (-round(candidates[i].score, 6), jitter[i]))
        ranked = [candidates[i] for i in order]
        whole = normalize_query(text).rstrip("。.!！?？")
        picked: list[_Candidate] = []
        # first pass: one phrase per noun phrase, no shared words; second: any non-overlapping span
        for strict in (True, False):
            for cand in ranked:
                if len(picked) == cfg.per_passage:
                    break
                key = normalize_query(cand.phrase)
                end = cand.start + len(cand.phrase)
                if key == whole or any(key == normalize_query(p.phrase) or
                                       (cand.start < p.start + len(p.phrase) and p.start < end)
                                       for p in picked):
                    continue
                if strict and any(cand.run == p.run or cand.words & p.words for p in picked):
                    continue
                picked.append(cand)
        return [c.phrase for c in picked]

    def generate(self, passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
        return [SyntheticQuery(phrase, self.query_type, doc_id)
                for doc_id, text in passages for phrase in self.keywords(text, doc_id)]


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


def load_causal_lm(name_or_path: str | Path, device: str | None = None):
    """``(model, tokenizer)`` for a registered name, a folder or a ``.gguf`` file. Never downloads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.hardware import default_device
    from distill.models import local_path

    path = local_path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
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


# --------------------------------------------------------------------------------------------------
# recipes

GENERATORS = ("keywords", "llm")


def build_generators(spec: Mapping[str, Any] | None) -> list[QueryGenerator]:
    """Generators from a recipe's ``queries.generate`` mapping, in its order, e.g.
    ``{"keywords": {"language": "en", "per_passage": 2}, "llm": {"types": ["question"]}}``.
    A generator given as ``null`` / ``{}`` uses its defaults."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ValueError(f"generate: expected a mapping of generator name → options, got {spec!r}")
    generators: list[QueryGenerator] = []
    for name, options in spec.items():
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"generate.{name}: expected a mapping of options, got {options!r}")
        if name == "keywords":
            generators.append(KeywordGenerator(KeywordConfig.from_dict(options, "generate.keywords")))
        elif name == "llm":
            generators.append(LLMGenerator(LLMConfig.from_dict(options, "generate.llm")))
        else:
            raise ValueError(f"generate: unknown generator {name!r} (known: {', '.join(GENERATORS)})")
    return generators


__all__ = [
    "DEFAULT_PROMPTS", "KeywordConfig", "KeywordGenerator", "LLMConfig", "LLMGenerator", "PromptTemplate",
    "QueryGenerator", "SyntheticQuery", "build_generators", "clean_generation", "dedupe_queries",
    "default_prompts", "detect_language", "drop_eval_overlap", "gguf_folder", "load_causal_lm",
    "normalize_query",
]
