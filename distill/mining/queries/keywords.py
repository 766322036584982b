"""Offline keyword queries: short entity/event phrases that are spans of the passage.

English goes through a POS-free chunker (stop words, a small verb lexicon and suffix heuristics cut
a caption into noun-like runs; the sub-spans of a run are scored by salience, position and length);
Chinese goes through jieba's POS tagger (runs of nouns / place names / verbal nouns, weighted by
jieba's IDF table). A phrase is always a span of the passage, never the whole passage.
Deterministic: ties are broken by a RNG seeded with ``(seed, doc_id, text)``, so a passage's
phrases do not depend on its batch. :func:`keyword_spans` exposes the scored candidate spans
(the cross-lingual transfer picks among a Chinese caption's spans).
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from distill.mining.queries import SyntheticQuery, _check_int, _config_from_dict, normalize_query


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



def keyword_spans(text: str, config: KeywordConfig | None = None,
                  language: Literal["en", "zh"] | None = None) -> list[str]:
    """Distinct candidate spans of ``text`` (``config``'s word limits), in the extractor's order.

    ``language`` overrides ``config.language`` (whose ``auto`` detects it from the text).
    """
    config = config or KeywordConfig()
    language = language or (detect_language(text) if config.language == "auto" else config.language)
    extract = _zh_candidates if language == "zh" else _en_candidates
    return list(dict.fromkeys(c.phrase for c in extract(text, config.min_words, config.max_words)))


__all__ = ["KeywordConfig", "KeywordGenerator", "detect_language", "keyword_spans"]
