"""GradCache: chunked two-pass encoding gives the gradients of one big forward + backward."""
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from distill.training.gradcache import GradCache, RngState, split_inputs
from students import DualEncoder

B, L = 8, 4  # queries × passages per query


def tiny_student(dropout: float, seed: int = 0) -> DualEncoder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    # tokenization is not under test: batches are built directly, so no tokenizer is needed
    return DualEncoder(BertModel(config), tokenizer=None).train()


def token_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 13, (n,), generator=gen)
    ids = torch.randint(5, 50, (n, int(lengths.max())), generator=gen)
    mask = (torch.arange(ids.size(1)) < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.fixture
def batch():
    scores = torch.randn(B, L, generator=torch.Generator().manual_seed(3))
    return {"query": token_batch(B, 1), "passage": token_batch(B * L, 2)}, scores


def listwise_loss(q, p, teacher_scores, temperature=0.05):
    """KL to the teacher over each query's list + in-batch cross-entropy (couples every chunk)."""
    scores = q @ p.T / temperature  # [B, B·L]
    own = scores.view(B, B, L)[torch.arange(B), torch.arange(B)]  # [B, L]: each query's own list
    kl = F.kl_div(own.log_softmax(-1), teacher_scores.softmax(-1), reduction="batchmean")
    ce = F.cross_entropy(scores, torch.arange(B) * L)
    return kl + ce, {"kl": kl, "ce": ce}


def encoders(student):
    return {"query": partial(student.forward_tokens, side="query"),
            "passage": partial(student.forward_tokens, side="passage")}


def plain_step(student, inputs, scores, loss_fn=listwise_loss):
    q = student.forward_tokens(inputs["query"], side="query")
    p = student.forward_tokens(inputs["passage"], side="passage")
    loss, _ = loss_fn(q, p, scores)
    loss.backward()
    return loss.detach(), grads(student)


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same_grads(got, want, atol=1e-5):
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("chunks", [2, 3, 5])  # 5 leaves a ragged last chunk on both sides
def test_chunked_equals_unchunked_without_dropout(batch, chunks):
    inputs, scores = batch
    student = tiny_student(dropout=0.0)
    want_loss, want = plain_step(student, inputs, scores)
    student.zero_grad(set_to_none=True)

    out = GradCache(encoders(student), listwise_loss, chunk_size=chunks)(inputs, teacher_scores=scores)
    torch.testing.assert_close(out.loss, want_loss, atol=1e-6, rtol=0)
    assert_same_grads(grads(student), want)
    assert set(out.aux) == {"kl", "ce"} and not out.aux["kl"].requires_grad
    assert out.embeddings["query"].shape == (B, student.dim)
    assert out.embeddings["passage"].shape == (B * L, student.dim)


@pytest.mark.parametrize("chunks", [None, 64])
def test_one_chunk_equals_plain_step_with_dropout(batch, chunks):
    inputs, scores = batch
    student = tiny_student(dropout=0.1)
    torch.manual_seed(7)
    want_loss, want = plain_step(student, inputs, scores)
    student.zero_grad(set_to_none=True)

    torch.manual_seed(7)
    out = GradCache(encoders(student), listwise_loss, chunk_size=chunks)(inputs, teacher_scores=scores)
    torch.testing.assert_close(out.loss, want_loss, atol=1e-6, rtol=0)
    assert_same_grads(grads(student), want)


def test_replay_reproduces_dropout_masks(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.1)
    seen = {"query": [], "passage": []}

    def recording(side):
        def encode(chunk):
            emb = student.forward_tokens(chunk, side=side)
            seen[side].append((torch.is_grad_enabled(), emb.detach().clone()))
            return emb
        return encode

    torch.manual_seed(0)
    GradCache({s: recording(s) for s in seen}, listwise_loss, chunk_size=2)(inputs, teacher_scores=scores)
    for side, calls in seen.items():
        n = len(calls) // 2
        assert n == len(split_inputs(inputs[side], 2))
        first, second = calls[:n], calls[n:]
        assert not any(grad for grad, _ in first) and all(grad for grad, _ in second)
        for (_, a), (_, b) in zip(first, second):
            assert torch.equal(a, b), side

    # dropout is really on: encoding a chunk twice without replay gives different embeddings
    chunk = split_inputs(inputs["query"], 2)[0]
    with torch.no_grad():
        assert not torch.allclose(student.forward_tokens(chunk), student.forward_tokens(chunk))


def test_replay_leaves_the_global_rng_stream_as_after_pass_one(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.1)
    torch.manual_seed(5)
    with torch.no_grad():
        student.forward_tokens(inputs["query"], side="query")
        student.forward_tokens(inputs["passage"], side="passage")
    expected = torch.rand(3)
    torch.manual_seed(5)
    GradCache(encoders(student), listwise_loss)(inputs, teacher_scores=scores)
    torch.testing.assert_close(torch.rand(3), expected)


def test_backward_hook_and_no_optimizer(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.0)
    want_loss, want = plain_step(student, inputs, scores)
    student.zero_grad(set_to_none=True)
    params_before = [p.detach().clone() for p in student.parameters()]

    calls = []

    def backward_fn(tensor, grad):  # what Lightning's manual_backward(tensor, gradient=grad) does
        calls.append(tensor.shape[0])
        tensor.backward(gradient=grad)

    GradCache(encoders(student), listwise_loss, chunk_size=8, backward_fn=backward_fn)(inputs, teacher_scores=scores)
    assert calls == [8, 8, 8, 8, 8]  # B=8 queries in one chunk, B·L=32 passages in four
    assert_same_grads(grads(student), want)
    assert all(torch.equal(a, b) for a, b in zip(params_before, student.parameters()))


def test_learnable_loss_parameter_gets_its_gradient(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.0)
    log_t = torch.nn.Parameter(torch.tensor(-2.0))

    def loss_fn(q, p, teacher_scores):
        return listwise_loss(q, p, teacher_scores, temperature=log_t.exp())

    plain_step(student, inputs, scores, loss_fn)
    want = log_t.grad.clone()
    log_t.grad = None
    GradCache(encoders(student), loss_fn, chunk_size=3)(inputs, teacher_scores=scores)
    torch.testing.assert_close(log_t.grad, want, atol=1e-5, rtol=1e-5)


def test_frozen_or_unused_side_is_skipped(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.0)
    frozen_passages = tiny_student(dropout=0.0, seed=1).requires_grad_(False)
    gc = GradCache({"query": partial(student.forward_tokens, side="query"),
                    "passage": partial(frozen_passages.forward_tokens, side="passage")},
                   listwise_loss, chunk_size=4)
    gc(inputs, teacher_scores=scores)
    assert grads(student) and not grads(frozen_passages)

    calls = []
    query_only = GradCache(encoders(student), lambda q, p: q.pow(2).mean(), chunk_size=4,
                           backward_fn=lambda t, g: calls.append(t.shape[0]) or t.backward(g))
    query_only(inputs)
    assert calls == [4, 4]  # the passage side got no gradient, so it is not re-encoded


def test_under_bf16_autocast(batch):
    inputs, scores = batch
    student = tiny_student(dropout=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        want_loss, want = plain_step(student, inputs, scores)
        student.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = GradCache(encoders(student), listwise_loss)(inputs, teacher_scores=scores)
    # same dropout masks, so the same loss; gradients agree to bf16 rounding only, because the plain
    # step sums the query and passage contributions through one cached bf16 weight cast, while
    # GradCache runs separate backwards and sums them in fp32
    torch.testing.assert_close(out.loss, want_loss, atol=1e-6, rtol=0)
    assert_close_relative(grads(student), want, 1e-2)

    # chunked under autocast tracks the fp32 unchunked step to bf16 precision
    fp32 = tiny_student(dropout=0.0)
    _, exact = plain_step(fp32, inputs, scores)
    fp32.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        GradCache(encoders(fp32), listwise_loss, chunk_size=2)(inputs, teacher_scores=scores)
    assert_close_relative(grads(fp32), exact, 5e-2)


def assert_close_relative(got, want, tolerance):
    assert got.keys() == want.keys() and want
    # a gradient that is zero in exact arithmetic (attention key biases: softmax ignores them) is bf16
    # rounding noise on both sides, so each tensor is compared on the scale of the largest gradient
    floor = 1e-3 * max(g.norm() for g in want.values())
    for name, g in want.items():
        assert torch.isfinite(got[name]).all(), name
        assert (got[name] - g).norm() <= tolerance * max(g.norm(), floor) + 1e-6, name


def test_split_inputs_and_errors():
    mapping = {"input_ids": torch.arange(10).view(5, 2), "attention_mask": torch.ones(5, 2), "meta": "x"}
    parts = split_inputs(mapping, 2)
    assert [p["input_ids"].shape[0] for p in parts] == [2, 2, 1] and parts[0]["meta"] == "x"
    assert split_inputs(mapping, None) == [mapping] and split_inputs(mapping, 5) == [mapping]
    assert [t.shape[0] for t in split_inputs(torch.zeros(5, 3), 4)] == [4, 1]
    with pytest.raises(ValueError):
        split_inputs({"a": torch.zeros(2), "b": torch.zeros(3)}, 1)
    with pytest.raises(ValueError):
        split_inputs(torch.zeros(5), 0)
    with pytest.raises(KeyError):
        GradCache({"query": lambda x: x}, lambda q: q.sum())({})
    with pytest.raises(ValueError, match="scalar"):
        GradCache({"query": lambda x: x * 1.0}, lambda q: q)({"query": torch.ones(2, 2)})
    assert RngState.capture(torch.zeros(1)).cuda_devices == [] or torch.cuda.is_available()


def test_lightning_manual_optimisation(batch, tmp_path):
    """The intended wiring: manual optimisation, every backward through ``manual_backward``."""
    import lightning as pl

    inputs, scores = batch
    reference = tiny_student(dropout=0.0)
    _, want = plain_step(reference, inputs, scores)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.student = tiny_student(dropout=0.0)
            self.gradcache = GradCache(encoders(self.student), listwise_loss, chunk_size=3,
                                       backward_fn=lambda t, g: self.manual_backward(t, gradient=g))
            self.seen = None

        def training_step(self, _, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            out = self.gradcache(inputs, teacher_scores=scores)
            self.seen = grads(self.student)
            opt.step()
            return out.loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader([0], batch_size=1)

    module = Module()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", precision="32-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module)
    assert_same_grads(module.seen, want)
