"""Speed settings change nothing but speed: length buckets, the training attention kernel and the fused
optimiser give the same embeddings, losses and training steps as the plain path."""
from __future__ import annotations

import functools
import json
import random

import lightning as L
import pytest
import torch

from distill.losses import ObjectiveConfig
from distill.training.buckets import encode_in_buckets, length_order, trim_padding
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig
from factories import WORDS, make_tiny_bert


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("buckets")
    rng = random.Random(0)
    # passages of 1 to 30 words: padding to the longest would waste most of each batch
    docs = {f"d{i}": " ".join(rng.choices(WORDS, k=rng.randint(1, 30))) for i in range(40)}
    rows = []
    for q in range(16):
        ids = rng.sample(sorted(docs), 5)
        rows.append({"query_id": f"q{q}", "query": " ".join(rng.sample(WORDS, rng.randint(1, 6))),
                     "query_type": "keywords", "source_id": "",
                     "candidates": [{"doc_id": d, "text": docs[d], "teacher_score": rng.uniform(-5, 5),
                                     "bm25_rank": r, "dense_rank": None} for r, d in enumerate(ids, 1)]})
    lists = base / "lists.jsonl"
    lists.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"bert": make_tiny_bert(base / "bert", dropout=0.0), "lists": lists, "texts": list(docs.values())}


def test_trim_padding_keeps_every_real_token_on_either_side():
    right = {"input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
    left = {"input_ids": torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7]]),
            "attention_mask": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]])}
    assert trim_padding(right, multiple=1)["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert trim_padding(left, multiple=1)["attention_mask"].tolist() == [[1, 1], [0, 1]]
    # widths rounded up to the multiple (fewer distinct shapes), padding columns taken from the padding side
    wide_right = {k: torch.nn.functional.pad(v, (0, 8)) for k, v in right.items()}
    wide_left = {k: torch.nn.functional.pad(v, (8, 0)) for k, v in left.items()}
    assert trim_padding(wide_right, multiple=3)["input_ids"].tolist() == [[5, 6, 0], [7, 0, 0]]
    assert trim_padding(wide_left, multiple=3)["attention_mask"].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert trim_padding(wide_right)["input_ids"].shape == (2, 8)  # default multiple 8
    assert trim_padding(right)["input_ids"].shape == (2, 4)  # never wider than the batch
    order, inverse = length_order({"attention_mask": torch.tensor([[1, 0], [1, 1], [1, 0]])})
    assert order.tolist() == [1, 0, 2] and order[inverse].tolist() == [0, 1, 2]


@pytest.mark.parametrize("bucket_size", [1, 7, 64])
def test_bucketed_embeddings_and_gradients_equal_padded(tiny, bucket_size):
    module = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None)
    student = module.student
    tokens = student.tokenize_passages(tiny["texts"])
    assert trim_padding(tokens)["input_ids"].shape == tokens["input_ids"].shape  # padded to the longest

    def run(size):
        student.zero_grad()
        emb = encode_in_buckets(lambda t: student.forward_tokens(t, "passage"), tokens, size)
        (emb * torch.linspace(-1, 1, emb.numel()).view_as(emb)).sum().backward()
        return emb.detach(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    want_emb, want_grad = run(None)
    got_emb, got_grad = run(bucket_size)
    torch.testing.assert_close(got_emb, want_emb, atol=1e-5, rtol=1e-4)
    assert got_grad.keys() == want_grad.keys()
    for name in want_grad:
        torch.testing.assert_close(got_grad[name], want_grad[name], atol=1e-5, rtol=1e-4, msg=name)


def _steps(tiny, root, steps: int, callbacks=(), **module_args) -> tuple[list[float], dict[str, torch.Tensor]]:
    L.seed_everything(0)
    module_args.setdefault("optimizer", OptimizerConfig(lr=1e-2, warmup_ratio=0.0))
    module = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None,
                                objective=ObjectiveConfig(kl_weight=1.0, contrastive_weight=0.1), **module_args)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    data = ListsDataModule(str(tiny["lists"]), list_size=5, batch_size=4, dev_fraction=0.0)
    L.Trainer(default_root_dir=str(root), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
              enable_model_summary=False, precision="32-true", max_steps=steps, enable_checkpointing=False,
              num_sanity_val_steps=0, callbacks=[Record(), *callbacks]).fit(module, datamodule=data)
    return losses, {k: v.detach().clone() for k, v in module.student.state_dict().items()}


@pytest.mark.parametrize("variant", [{"bucket_size": 3}, {"bucket_size": 8, "chunk_size": 8}],
                         ids=["buckets", "buckets-under-gradcache"])
def test_bucketed_training_follows_the_padded_loss_curve(tiny, tmp_path, variant):
    """fp32 losses within 1e-4 over several optimiser steps, and the same weights at the end."""
    want_losses, want = _steps(tiny, tmp_path / "padded", 4, bucket_size=None)
    got_losses, got = _steps(tiny, tmp_path / "bucketed", 4, **variant)
    assert len(got_losses) == 4 and len(set(round(x, 4) for x in want_losses)) > 1
    assert got_losses == pytest.approx(want_losses, abs=1e-4)
    for key in want:
        if "attention.self.key.bias" in key:
            # softmax ignores a key bias, so its gradient is rounding noise that Adam scales up to lr
            continue
        # atol 5e-5 = 0.5 % of one Adam step at lr 1e-2: a bucketing mistake moves weights by about a step;
        # Adam's 1/sqrt(v) magnifies fp32 rounding in small-gradient entries (1.1e-5 seen on an AVX2-only CPU)
        torch.testing.assert_close(got[key], want[key], atol=5e-5, rtol=1e-4, msg=key)


def test_training_attention_kernel_and_fused_adamw_follow_the_plain_loss_curve(tiny, tmp_path):
    """``attention: auto`` trains with the eager kernel on CPU and AdamW is fused; fp32 losses and
    weights equal SDPA with the per-tensor optimiser."""
    from distill.hardware import training_attention

    assert training_attention("cpu", 27) == "eager" and training_attention("cuda", 27) is None
    seen = {}

    class Inspect(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            seen["attention"] = pl_module.student.model.config._attn_implementation
            seen["fused"] = pl_module.optimizers().optimizer.defaults["fused"]

    want_losses, want = _steps(tiny, tmp_path / "plain", 4, bucket_size=None, attention="sdpa",
                               optimizer=OptimizerConfig(lr=1e-2, warmup_ratio=0.0, fused=False))
    got_losses, got = _steps(tiny, tmp_path / "fast", 4, callbacks=[Inspect()])
    assert seen == {"attention": "eager", "fused": True}
    assert got_losses == pytest.approx(want_losses, abs=1e-4)
    for key in want:
        if "attention.self.key.bias" not in key:  # see above
            torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4, msg=key)


def test_retain_freed_memory_takes_on_glibc():
    import platform

    from distill.hardware import retain_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is expected


def test_bucket_size_is_validated(tiny):
    with pytest.raises(ValueError, match="bucket_size must be >= 1"):
        DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None, bucket_size=0)


def test_long_batches_train_with_sdpa_short_ones_with_eager(tiny, monkeypatch):
    """Eager keeps every [heads, L, L] attention matrix for backward (22 GB RSS on SciFact abstracts):
    under ``attention: auto`` on CPU a batch padded past EAGER_MAX_TOKENS runs SDPA, a short one eager."""
    import distill.hardware as hardware

    assert hardware.training_attention("cpu", hardware.EAGER_MAX_TOKENS) == "eager"
    assert hardware.training_attention("cpu", hardware.EAGER_MAX_TOKENS + 1) == "sdpa"
    monkeypatch.setattr(hardware, "EAGER_MAX_TOKENS", 6)  # the tiny model holds 128 positions
    module = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None)
    student = module.student
    student.set_attention(functools.partial(hardware.training_attention, "cpu"))
    short = student.tokenize(["a b"], "passage")
    long = student.tokenize([" ".join(WORDS[:10])], "passage")
    assert short["input_ids"].shape[-1] <= 6 < long["input_ids"].shape[-1]
    student.forward_tokens(short, "passage").sum().backward()
    assert student.model.config._attn_implementation == "eager"
    student.forward_tokens(long, "passage").sum().backward()
    assert student.model.config._attn_implementation == "sdpa"
    student.set_attention("eager")  # a fixed kernel ends the per-length choice
    student.forward_tokens(long, "passage")
    assert student.model.config._attn_implementation == "eager"
