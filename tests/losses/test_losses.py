"""distill/losses: hand-computed cases, numpy oracles and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.losses import (
    DistillationObjective,
    InfoNCELoss,
    ListwiseKLLoss,
    MarginMSELoss,
    ObjectiveConfig,
    info_nce,
    listwise_kl,
    margin_mse,
    minmax_normalize,
)

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- numpy oracles (written independently)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def np_minmax(t: np.ndarray) -> np.ndarray:
    spread = t.max() - t.min()
    return np.ones_like(t) if spread <= 0 else (t - t.min()) / spread


def np_kl_list(student: np.ndarray, teacher: np.ndarray, ts: float, tt: float, minmax: bool = True) -> float:
    """KL(p ‖ q) of one unpadded list."""
    teacher = np_minmax(teacher) if minmax else teacher
    log_p = np_log_softmax(teacher / tt)
    log_q = np_log_softmax(student / ts)
    return float((np.exp(log_p) * (log_p - log_q)).sum())


def np_info_nce(q, p, teacher, ids, mask, tau, ratio, extra=None, extra_ids=None) -> float:
    """Loop-by-loop reading of the InfoNCE rule."""
    batch, size = teacher.shape
    columns = [(p[i * size + j], ids[i][j], mask[i, j], i, j) for i in range(batch) for j in range(size)]
    if extra is not None:
        columns += [(extra[m], extra_ids[m], True, None, None) for m in range(len(extra))]
    losses = []
    for i in range(batch):
        valid = [j for j in range(size) if mask[i, j]]
        if not valid:
            continue
        t = teacher[i, valid]
        pos = valid[int(np.argmax(t))]
        norm = dict(zip(valid, np_minmax(t)))
        pos_logit = float(q[i] @ p[i * size + pos]) / tau
        kept = []
        for emb, doc, real, owner, j in columns:
            if owner == i and j == pos:
                kept.append(pos_logit)
                continue
            if not real:
                continue
            if owner == i and norm[j] > ratio:
                continue
            if doc is not None and doc == ids[i][pos]:
                continue
            kept.append(float(q[i] @ emb) / tau)
        kept = np.array(kept)
        top = kept.max()
        losses.append(top + math.log(np.exp(kept - top).sum()) - pos_logit)
    return float(np.mean(losses)) if losses else math.nan


# ---------------------------------------------------------------- strategies


@st.composite
def scored_lists(draw, max_batch=4, max_len=6, low=-20.0, high=20.0):
    """(teacher, student) float32 [B, L] arrays; shapes, seed and ties are drawn, values seeded."""
    batch = draw(st.integers(1, max_batch))
    size = draw(st.integers(1, max_len))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    teacher, student = rng.uniform(low, high, size=(2, batch, size))
    if draw(st.booleans()):  # coarse values: ties within a list, sometimes a whole list equal
        teacher = np.round(teacher / (high - low) * 2) * (high - low) / 2
    return teacher.astype(np.float32), student.astype(np.float32)


def random_batch(seed: int, batch: int, size: int, dim: int = 4, vocab: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(batch * size, dim, generator=gen), dim=-1)
    teacher = torch.randn(batch, size, generator=gen) * 4
    vocab = vocab or batch * size * 2
    ids = torch.randint(0, vocab, (batch, size), generator=gen)
    doc_ids = [[f"d{int(v)}" for v in row] for row in ids]
    return q, p, teacher, doc_ids


# ---------------------------------------------------------------- listwise KL


def test_kl_hand_computed():
    # teacher [2, 0, 1] → minmax [1, 0, 0.5] → /0.3; student [0.1, 0.3, 0.2] → /0.05 = [2, 6, 4]
    p = np.exp(np.array([1.0, 0.0, 0.5]) / 0.3)
    p /= p.sum()
    q = np.exp(np.array([2.0, 6.0, 4.0]))
    q /= q.sum()
    expected = float((p * np.log(p / q)).sum())
    # by hand: p = [0.81663, 0.02913, 0.15424], q = [0.015876, 0.866814, 0.117310]
    # KL = 0.81663·ln(51.44) + 0.02913·ln(0.033606) + 0.15424·ln(1.3148) = 3.2178 − 0.0988 + 0.0422
    assert expected == pytest.approx(3.16117, abs=1e-4)
    got = listwise_kl(torch.tensor([[0.1, 0.3, 0.2]]), torch.tensor([[2.0, 0.0, 1.0]]), 0.05, 0.3)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kl_hand_computed_two_lists_no_normalization():
    student = np.array([[0.1, 0.3, 0.2], [0.0, 0.0, 0.5]])
    teacher = np.array([[2.0, 0.0, 1.0], [-3.0, 1.0, 0.0]])
    expected = np.mean([np_kl_list(s, t, 0.05, 0.3, minmax=False) for s, t in zip(student, teacher)])
    got = listwise_kl(torch.tensor(student), torch.tensor(teacher), 0.05, 0.3, teacher_normalization="none")
    assert got.item() == pytest.approx(expected, rel=1e-5)


@FAST
@given(scored_lists(), st.floats(0.01, 1.0), st.floats(0.05, 2.0), st.floats(-50, 50))
def test_kl_zero_when_distributions_match(lists, ts, tt, shift):
    teacher, _ = lists
    matching = minmax_normalize(torch.tensor(teacher)) / tt * ts + shift  # softmax is shift-invariant
    loss = listwise_kl(matching, torch.tensor(teacher), ts, tt)
    assert abs(loss.item()) <= 1e-6


@FAST
@given(scored_lists(), st.floats(0.01, 1.0), st.floats(0.05, 2.0))
def test_kl_positive_when_distributions_differ_and_matches_oracle(lists, ts, tt):
    teacher, student = lists
    loss = listwise_kl(torch.tensor(student), torch.tensor(teacher), ts, tt).item()
    expected = np.mean([np_kl_list(s.astype(np.float64), t.astype(np.float64), ts, tt) for s, t in zip(student, teacher)])
    assert loss == pytest.approx(expected, rel=1e-3, abs=1e-5)
    # Pinsker: KL >= 2 TV², so differing distributions give a strictly positive loss.
    tv = []
    for s, t in zip(student.astype(np.float64), teacher.astype(np.float64)):
        p = np.exp(np_log_softmax(np_minmax(t) / tt))
        q = np.exp(np_log_softmax(s / ts))
        tv.append(0.5 * np.abs(p - q).sum())
    pinsker = np.mean([2 * v**2 for v in tv])
    assert loss >= pinsker - 1e-4
    if max(tv) > 1e-2:
        assert loss > 0


@FAST
@given(
    scored_lists(low=-1.0, high=1.0),
    st.sampled_from([1.0, 1e3, 1e4]),
    st.booleans(),
    st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_kl_gradients_finite(lists, scale, equal_teacher, dtype):
    teacher, student = lists
    if equal_teacher:
        teacher = np.full_like(teacher, 3.5)
    student_t = (torch.tensor(student) * scale).to(dtype).requires_grad_()
    teacher_t = (torch.tensor(teacher) * scale).to(dtype)
    for normalization in ("minmax", "none"):
        loss = listwise_kl(student_t, teacher_t, teacher_normalization=normalization)
        (grad,) = torch.autograd.grad(loss, student_t)
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_kl_equal_teacher_scores_is_uniform_target():
    teacher = torch.full((1, 4), -2.0)
    assert torch.equal(minmax_normalize(teacher), torch.ones(1, 4))
    loss = listwise_kl(torch.zeros(1, 4), teacher)  # uniform student == uniform target
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_kl_under_bf16_autocast_is_float32():
    student = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5)
    reference = listwise_kl(student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = listwise_kl(student, teacher)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all()


@FAST
@given(scored_lists(max_batch=4, max_len=5), st.data())
def test_kl_mask_equals_shorter_lists(lists, data):
    teacher, student = lists
    batch, size = teacher.shape
    lengths = [data.draw(st.integers(1, size)) for _ in range(batch)]
    pad = data.draw(st.integers(0, 3))
    garbage = np.float32(data.draw(st.sampled_from([1e4, -1e4, 0.0, 7.0])))
    mask = torch.zeros(batch, size + pad, dtype=torch.bool)
    padded_t = torch.full((batch, size + pad), float(garbage))
    padded_s = torch.full((batch, size + pad), float(-garbage)).requires_grad_(False)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
        padded_t[i, :n] = torch.tensor(teacher[i, :n])
        padded_s[i, :n] = torch.tensor(student[i, :n])
    padded_s.requires_grad_()
    loss = listwise_kl(padded_s, padded_t, mask=mask)
    expected = torch.stack(
        [listwise_kl(torch.tensor(student[i : i + 1, :n]), torch.tensor(teacher[i : i + 1, :n])) for i, n in enumerate(lengths)]
    ).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    (grad,) = torch.autograd.grad(loss, padded_s)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()


def test_kl_fully_masked_list_is_left_out():
    student, teacher = torch.randn(2, 3), torch.randn(2, 3)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    both = listwise_kl(student, teacher, mask=mask)
    first = listwise_kl(student[:1, :2], teacher[:1, :2])
    assert both.item() == pytest.approx(first.item(), rel=1e-6)


def test_kl_rejects_bad_arguments():
    with pytest.raises(ValueError, match="teacher_normalization"):
        listwise_kl(torch.zeros(1, 2), torch.zeros(1, 2), teacher_normalization="zscore")
    with pytest.raises(ValueError, match="temperature"):
        listwise_kl(torch.zeros(1, 2), torch.zeros(1, 2), student_temperature=0.0)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        listwise_kl(torch.zeros(1, 2), torch.zeros(1, 3))


def test_kl_module_matches_function():
    s, t = torch.randn(2, 4), torch.randn(2, 4)
    module = ListwiseKLLoss(0.1, 0.5, "none")
    assert module(s, t).item() == pytest.approx(listwise_kl(s, t, 0.1, 0.5, "none").item())


# ---------------------------------------------------------------- InfoNCE


def test_info_nce_hand_computed():
    # B=2, L=3, D=2, τ=0.5, ratio 0.6
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.6, -0.8], [-1.0, 0.0]])
    teacher = np.array([[3.0, -1.0, 2.5], [0.0, 1.0, -2.0]])
    ids = [["a", "b", "c"], ["d", "a", "e"]]
    # list 0: minmax [1, 0, 0.875] → positive col 0, col 2 likely false negative
    # list 1: minmax [2/3, 1, 0]   → positive col 4 ("a"), col 3 likely false negative (2/3 > 0.6)
    # query 0: positive "a" also at col 4 → excluded; kept cols {0, 1, 3, 5}
    # query 1: positive "a" also at col 0 → excluded; kept cols {4, 1, 2, 5}
    sims = q @ p.T / 0.5
    kept = {0: [0, 1, 3, 5], 1: [4, 1, 2, 5]}
    positive = {0: 0, 1: 4}
    expected = np.mean([np.log(np.exp(sims[i, kept[i]]).sum()) - sims[i, positive[i]] for i in (0, 1)])
    # by hand: q0 sims/τ = [1.6, 0, 2, -2] → lse − 1.6; q1 = [-1.6, 2, 1.6, 0] → lse + 1.6
    by_hand = 0.5 * (
        math.log(math.exp(1.6) + 1 + math.exp(2) + math.exp(-2)) - 1.6
        + math.log(math.exp(-1.6) + math.exp(2) + math.exp(1.6) + 1) + 1.6
    )
    assert expected == pytest.approx(by_hand)
    got = info_nce(
        torch.tensor(q), torch.tensor(p), torch.tensor(teacher), ids, temperature=0.5, false_negative_ratio=0.6
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


@FAST
@given(
    st.integers(0, 10_000),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(0, 4),
    st.floats(0.05, 1.0),
    st.booleans(),
)
def test_info_nce_matches_oracle(seed, batch, size, extra, ratio, int_ids):
    q, p, teacher, doc_ids = random_batch(seed, batch, size, vocab=max(2, batch * size // 2))
    gen = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(batch, size, generator=gen) > 0.25
    extra_emb = torch.nn.functional.normalize(torch.randn(extra, 4, generator=gen), dim=-1)
    extra_ids = [f"d{int(v)}" for v in torch.randint(0, batch * size, (extra,), generator=gen)]
    expected = np_info_nce(
        q.double().numpy(), p.double().numpy(), teacher.numpy(), doc_ids, mask.numpy(), 0.05, ratio,
        extra_emb.double().numpy(), extra_ids,
    )
    if int_ids:
        ints = {d: k for k, d in enumerate(sorted({*sum(doc_ids, []), *extra_ids}))}
        doc_ids = torch.tensor([[ints[d] for d in row] for row in doc_ids])
        extra_ids = torch.tensor([ints[d] for d in extra_ids], dtype=torch.long)
    got = info_nce(q, p, teacher, doc_ids, 0.05, ratio, mask, extra_emb, extra_ids)
    if math.isnan(expected):  # every list empty
        assert got.item() == 0.0
    else:
        assert got.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def _loss_with_row_replaced(q, p, teacher, ids, row, value, **kwargs):
    p = p.clone()
    p[row] = value
    return info_nce(q, p, teacher, ids, **kwargs).item()


@FAST
@given(st.integers(0, 10_000), st.floats(-5, 5))
def test_info_nce_false_negative_is_ignored(seed, scale):
    q, p, teacher, _ = random_batch(seed, 1, 4)
    teacher[0] = torch.tensor([5.0, -3.0, 4.0, 0.0])  # minmax [1, 0, 0.875, 0.375]: col 2 is a false negative
    ids = [["a", "b", "c", "d"]]
    extra = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(seed)), dim=-1)
    kwargs = dict(temperature=0.05, false_negative_ratio=0.6, extra_passage_emb=extra)
    base = info_nce(q, p, teacher, ids, **kwargs).item()
    moved = _loss_with_row_replaced(q, p, teacher, ids, 2, q[0] * scale, **kwargs)
    assert moved == pytest.approx(base, rel=1e-6)
    # col 3 (0.375) is an ordinary negative: moving it onto the query changes the loss
    changed = _loss_with_row_replaced(q, p, teacher, ids, 3, q[0] * 3.0, **kwargs)
    assert changed != pytest.approx(base, rel=1e-6)


@FAST
@given(st.integers(0, 10_000), st.floats(-5, 5))
def test_info_nce_padding_is_ignored(seed, scale):
    q, p, teacher, ids = random_batch(seed, 2, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    ids[1][2] = None
    base = info_nce(q, p, teacher, ids, candidate_mask=mask).item()
    padded_teacher = teacher.clone()
    padded_teacher[1, 2] = 1e6  # would be the positive if it counted
    moved = _loss_with_row_replaced(q, p, padded_teacher, ids, 5, q[0] * scale, candidate_mask=mask)
    assert moved == pytest.approx(base, rel=1e-6)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(2, 4), st.integers(1, 3))
def test_info_nce_mask_equals_shorter_lists(seed, batch, size, pad):
    q, p, teacher, ids = random_batch(seed, batch, size)
    base = info_nce(q, p, teacher, ids)
    dim = q.shape[1]
    longer_p = torch.cat([p.view(batch, size, dim), torch.randn(batch, pad, dim) * 10], dim=1).view(-1, dim)
    longer_t = torch.cat([teacher, torch.full((batch, pad), 1e4)], dim=1)
    mask = torch.cat([torch.ones(batch, size), torch.zeros(batch, pad)], dim=1).bool()
    longer = info_nce(q, longer_p, longer_t, ids, candidate_mask=mask)  # ragged ids: missing tail = padding
    assert longer.item() == pytest.approx(base.item(), rel=1e-5)


def test_info_nce_same_document_as_other_queries_positive_is_not_a_negative():
    q, p, teacher, _ = random_batch(3, 2, 3)
    teacher[0] = torch.tensor([4.0, 0.0, -1.0])  # positive of query 0: col 0
    teacher[1] = torch.tensor([0.0, 5.0, -2.0])  # positive of query 1: col 4
    # Both queries' positive is document "x": neither may push the other's copy away.
    p[0] = p[4] = torch.nn.functional.normalize(q[0] + q[1], dim=-1)  # close to both queries
    ids = [["x", "b", "c"], ["d", "x", "e"]]
    both = info_nce(q, p, teacher, ids, 0.05, 0.6)
    # Each query on its own, with the other list (minus the shared document) as extra negatives.
    only0 = info_nce(q[:1], p[:3], teacher[:1], ids[:1], 0.05, 0.6, extra_passage_emb=p[[3, 5]], extra_doc_ids=["d", "e"])
    only1 = info_nce(q[1:], p[3:], teacher[1:], ids[1:], 0.05, 0.6, extra_passage_emb=p[[1, 2]], extra_doc_ids=["b", "c"])
    assert both.item() == pytest.approx((only0.item() + only1.item()) / 2, rel=1e-6)
    distinct = info_nce(q, p, teacher, [["x", "b", "c"], ["d", "y", "e"]], 0.05, 0.6)
    assert distinct.item() != pytest.approx(both.item(), rel=1e-6)
    # and the same document among the extra (other devices') passages is ignored too
    extra = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    with_extra = info_nce(q, p, teacher, ids, 0.05, 0.6, extra_passage_emb=extra, extra_doc_ids=["x", "x"])
    assert with_extra.item() == pytest.approx(both.item(), rel=1e-6)


def test_info_nce_gradients_finite_bf16_and_autocast():
    q, p, teacher, ids = random_batch(0, 3, 4)
    teacher[1] = 2.0  # all equal
    for dtype in (torch.float32, torch.bfloat16):
        q_ = (q * 1e3).to(dtype).detach().requires_grad_()
        p_ = p.to(dtype).detach().clone().requires_grad_()
        loss = info_nce(q_, p_, teacher.to(dtype), ids)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(q_.grad).all() and torch.isfinite(p_.grad).all()
    q_ = q.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q_, p, teacher, ids)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(info_nce(q, p, teacher, ids).item(), rel=1e-6)


def test_info_nce_all_equal_teacher_drops_own_list():
    q, p, teacher, ids = random_batch(1, 1, 3)
    teacher[0] = 1.0
    extra = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    base = info_nce(q, p, teacher, ids, extra_passage_emb=extra).item()
    assert base > 0
    for row in (1, 2):  # every non-positive candidate ties with the top → false negatives
        moved = _loss_with_row_replaced(q, p, teacher, ids, row, q[0] * 4, extra_passage_emb=extra)
        assert moved == pytest.approx(base, rel=1e-6)


def test_info_nce_rejects_bad_arguments():
    q, p, teacher, ids = random_batch(0, 2, 3)
    with pytest.raises(ValueError, match="false_negative_ratio"):
        info_nce(q, p, teacher, ids, false_negative_ratio=0.0)
    with pytest.raises(ValueError, match="shapes"):
        info_nce(q, p[:5], teacher, ids)
    with pytest.raises(ValueError, match="extra_doc_ids"):
        info_nce(q, p, teacher, ids, extra_passage_emb=p[:2], extra_doc_ids=["a"])
    with pytest.raises(ValueError, match="doc_ids"):
        info_nce(q, p, teacher, ids[:1])


def test_info_nce_module_matches_function():
    q, p, teacher, ids = random_batch(5, 2, 3)
    assert InfoNCELoss(0.1, 0.5)(q, p, teacher, ids).item() == pytest.approx(info_nce(q, p, teacher, ids, 0.1, 0.5).item())


# ---------------------------------------------------------------- Margin-MSE


def test_margin_mse_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.5, 0.5], [0.2, 0.1], [0.9, 0.0]])  # student scores [0.5, 0.2, 0.9]
    teacher = torch.tensor([[1.0, 3.0, -1.0]])  # positive: candidate 1
    # student margins 0.2−0.5 = −0.3, 0.2−0.9 = −0.7; teacher margins 3−1 = 2, 3+1 = 4
    # ((−0.3 − 2)² + (−0.7 − 4)²) / 2 = (5.29 + 22.09) / 2 = 13.69
    assert margin_mse(q, p, teacher).item() == pytest.approx(13.69, rel=1e-5)
    # minmax teacher [0.5, 1, 0]: margins 0.5, 1 → ((−0.8)² + (−1.7)²) / 2 = (0.64 + 2.89) / 2
    assert margin_mse(q, p, teacher, teacher_normalization="minmax").item() == pytest.approx(1.765, rel=1e-5)
    # padding candidate 2 leaves one margin: (−0.3 − 2)² = 5.29
    mask = torch.tensor([[True, True, False]])
    assert MarginMSELoss()(q, p, teacher, mask).item() == pytest.approx(5.29, rel=1e-5)


def test_margin_mse_two_lists_mean_over_lists_and_finite_grads():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    p = torch.tensor([[0.5, 0.5], [0.2, 0.1], [0.9, 0.0], [0.0, 1.0], [1.0, 0.0], [7.0, 7.0]])
    teacher = torch.tensor([[1.0, 3.0, -1.0], [2.0, 0.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # list 1: scores [1, 0], positive 0, one margin: (1 − 2)² = 1
    loss = margin_mse(q, p, teacher, mask)
    assert loss.item() == pytest.approx((13.69 + 1.0) / 2, rel=1e-5)
    loss.backward()
    assert torch.isfinite(q.grad).all()


# ---------------------------------------------------------------- objective


def test_objective_is_weighted_sum_of_terms():
    q, p, teacher, ids = random_batch(7, 3, 4)
    config = ObjectiveConfig(kl_weight=0.7, contrastive_weight=0.2, margin_mse_weight=0.05)
    out = DistillationObjective(config)(q, p, teacher, ids)
    scores = torch.einsum("bd,bld->bl", q, p.view(3, 4, -1))
    kl = listwise_kl(scores, teacher, 0.05, 0.3)
    nce = info_nce(q, p, teacher, ids, 0.01, 0.6)
    mm = margin_mse(q, p, teacher)
    assert set(out) == {"loss", "kl", "contrastive", "margin_mse"}
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-6)
    assert out["contrastive"].item() == pytest.approx(nce.item(), rel=1e-6)
    assert out["margin_mse"].item() == pytest.approx(mm.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.7 * kl.item() + 0.2 * nce.item() + 0.05 * mm.item(), rel=1e-6)
    assert not out["kl"].requires_grad


@pytest.mark.parametrize(
    ("weights", "present"),
    [
        ({"contrastive_weight": 0.0}, {"kl"}),
        ({"kl_weight": 0.0, "contrastive_weight": 1.0}, {"contrastive"}),
        ({"kl_weight": 0.0, "contrastive_weight": 0.0, "margin_mse_weight": 1.0}, {"margin_mse"}),
    ],
)
def test_objective_zero_weight_skips_term(weights, present, monkeypatch):
    objective = DistillationObjective(**weights)
    for name in {"kl", "contrastive", "margin_mse"} - present:
        monkeypatch.setattr(getattr(objective, name), "forward", lambda *a, **k: pytest.fail(f"{name} computed"))
    q, p, teacher, ids = random_batch(2, 2, 3)
    q.requires_grad_()
    out = objective(q, p, teacher, ids)
    assert set(out) == {"loss"} | present
    (name,) = present
    assert out["loss"].item() == pytest.approx(out[name].item(), rel=1e-6)
    out["loss"].backward()
    assert torch.isfinite(q.grad).all()


def test_objective_overrides_on_config():
    objective = DistillationObjective(ObjectiveConfig(student_temperature=0.1), kl_weight=2.0)
    assert objective.config.kl_weight == 2.0 and objective.config.student_temperature == 0.1
    assert objective.kl.student_temperature == 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kl_weight": -1.0}, r"kl_weight must be >= 0"),
        ({"contrastive_weight": float("nan")}, r"contrastive_weight must be a finite number"),
        ({"kl_weight": 0.0, "contrastive_weight": 0.0, "margin_mse_weight": 0.0}, r"all 0"),
        ({"student_temperature": 0.0}, r"student_temperature must be > 0"),
        ({"teacher_temperature": -0.3}, r"teacher_temperature must be > 0"),
        ({"contrastive_temperature": float("inf")}, r"contrastive_temperature must be a finite number"),
        ({"false_negative_ratio": 0.0}, r"false_negative_ratio must be in \(0, 1\]"),
        ({"false_negative_ratio": 1.5}, r"false_negative_ratio must be in \(0, 1\]"),
        ({"teacher_normalization": "zscore"}, r"teacher_normalization must be one of 'none', 'minmax'"),
        ({"margin_mse_teacher_normalization": "max"}, r"margin_mse_teacher_normalization must be one of"),
        ({"kl_weight": "1"}, r"kl_weight must be a finite number"),
    ],
)
def test_objective_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        DistillationObjective(**kwargs)


def test_objective_config_accepts_defaults_and_edge_values():
    ObjectiveConfig()
    ObjectiveConfig(false_negative_ratio=1.0, kl_weight=0, contrastive_weight=1)


# ---------------------------------------------------------------- CADET's percentile scale, entropies


def test_percentile_normalize_hand_computed_and_clipped():
    from distill.losses import percentile_normalize

    scores = torch.tensor([[-12.0, -2.0, 3.0, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    # (s − (−2)) / (8 − (−2)), clipped to [0, 1]; masked → 0
    expected = torch.tensor([[0.0, 0.0, 0.5, 0.0]])
    torch.testing.assert_close(percentile_normalize(scores, (-2.0, 8.0), mask), expected)
    torch.testing.assert_close(percentile_normalize(scores, torch.tensor([-2.0, 8.0])),
                               torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="p1 < p99"):
        percentile_normalize(scores, (3.0, 3.0))


def test_kl_percentile_keeps_a_poor_list_poor():
    """One set-wide scale: a list the teacher finds uniformly poor gets a flatter target than under
    per-list min-max (which stretches any list to [0, 1])."""
    teacher = torch.tensor([[-9.0, -8.0, -7.5]])
    student = torch.tensor([[0.9, 0.1, 0.2]])
    by_hand = np.array([[-9.0, -8.0, -7.5]])
    target = np.clip((by_hand - (-10.0)) / (5.0 - (-10.0)), 0, 1) / 0.3
    p = np.exp(target - target.max()) / np.exp(target - target.max()).sum()
    s = student.numpy() / 0.05
    log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
    expected = float((p * (np.log(p) - log_q)).sum())
    got = listwise_kl(student, teacher, 0.05, 0.3, "percentile", percentiles=(-10.0, 5.0))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"\(p1, p99\)"):
        listwise_kl(student, teacher, 0.05, 0.3, "percentile")


def test_info_nce_false_negative_rule_on_the_percentile_scale():
    """ "> r × top" on the KL target's scale: with percentile scores [1, 0, 0.9, 0.5] col 2 is masked;
    with p99 far above the list (scores [0.4, 0, 0.36, 0.2]) still only col 2, since 0.36 > 0.6 × 0.4."""
    q, p, _, _ = random_batch(3, 1, 4)
    ids = [["a", "b", "c", "d"]]
    teacher = torch.tensor([[10.0, 0.0, 9.0, 5.0]])
    for percentiles in ((0.0, 10.0), (0.0, 25.0)):
        kwargs = dict(temperature=0.05, false_negative_ratio=0.6, teacher_normalization="percentile",
                      percentiles=percentiles)
        base = info_nce(q, p, teacher, ids, **kwargs).item()
        assert _loss_with_row_replaced(q, p, teacher, ids, 2, q[0] * 4.0, **kwargs) == pytest.approx(base, rel=1e-6)
        assert _loss_with_row_replaced(q, p, teacher, ids, 3, q[0] * 4.0, **kwargs) != pytest.approx(base, rel=1e-6)
    # a list wholly below p1 (all 0 on the scale, top included): nothing is dropped as a false negative
    low = torch.tensor([[-5.0, -6.0, -5.5, -7.0]])
    kwargs = dict(temperature=0.05, false_negative_ratio=0.6, teacher_normalization="percentile",
                  percentiles=(0.0, 10.0))
    base = info_nce(q, p, low, ids, **kwargs).item()
    assert _loss_with_row_replaced(q, p, low, ids, 2, q[0] * 4.0, **kwargs) != pytest.approx(base, rel=1e-6)


def test_objective_passes_the_percentile_scale_to_both_terms():
    q, p, teacher, ids = random_batch(5, 3, 4)
    objective = DistillationObjective(teacher_normalization="percentile")
    with pytest.raises(RuntimeError, match="never set"):
        objective(q, p, teacher, ids)
    objective.set_percentiles(-3.0, 4.0)
    out = objective(q, p, teacher, ids)
    from distill.losses import list_scores

    kl = listwise_kl(list_scores(q, p), teacher, 0.05, 0.3, "percentile", percentiles=(-3.0, 4.0))
    nce = info_nce(q, p, teacher, ids, 0.01, 0.6, teacher_normalization="percentile", percentiles=(-3.0, 4.0))
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-6)
    assert out["contrastive"].item() == pytest.approx(nce.item(), rel=1e-6)
    # the chosen numbers travel in the state dict (checkpoint → resume / export)
    restored = DistillationObjective(teacher_normalization="percentile")
    restored.load_state_dict(objective.state_dict())
    assert restored.percentiles == (-3.0, 4.0)
    assert restored(q, p, teacher, ids)["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_list_entropy_hand_computed_and_masked():
    from distill.losses import list_entropy

    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [False, False, True, True], [False] * 4])
    got = list_entropy(scores, 0.5, mask)
    torch.testing.assert_close(got, torch.tensor([math.log(4), math.log(2), 0.0]))
    p = torch.softmax(torch.tensor([1.0, 0.0]) / 0.5, dim=0)
    assert list_entropy(torch.tensor([[1.0, 0.0]]), 0.5).item() == pytest.approx(-(p * p.log()).sum().item(), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_temperature_reaches_the_target_entropy(seed):
    """The auto student temperature: its mean list entropy equals the teacher's within 1e-3."""
    from distill.losses import list_entropy, match_temperature, normalize_teacher

    q, p, teacher, _ = random_batch(seed, 8, 10, dim=16)
    from distill.losses import list_scores

    student = list_scores(q, p)
    mask = torch.ones(8, 10, dtype=torch.bool)
    mask[0, 7:] = False
    target = list_entropy(normalize_teacher(teacher, "minmax", mask), 0.3, mask).mean().item()
    temperature = match_temperature(student, target, mask)
    assert abs(list_entropy(student, temperature, mask).mean().item() - target) < 1e-3
    with pytest.raises(ValueError, match="out of reach"):
        match_temperature(torch.zeros(2, 3), 0.5)  # equal scores: entropy log 3 at every temperature


def test_objective_auto_student_temperature_must_be_chosen_and_is_saved():
    q, p, teacher, ids = random_batch(0, 2, 3)
    objective = DistillationObjective(student_temperature="auto")
    assert objective.student_temperature is None
    with pytest.raises(RuntimeError, match="has not been chosen"):
        objective(q, p, teacher, ids)
    DistillationObjective(student_temperature="auto", kl_weight=0.0, contrastive_weight=1.0)(q, p, teacher, ids)
    objective.set_student_temperature(0.02)
    state = objective.state_dict()
    restored = DistillationObjective(student_temperature="auto")
    restored.load_state_dict(state)
    assert restored.student_temperature == 0.02 and restored.kl.student_temperature == 0.02
    with pytest.raises(ValueError, match="student_temperature must be > 0"):
        ObjectiveConfig(student_temperature=-1.0)
    with pytest.raises(ValueError, match="margin_mse_teacher_normalization must be one of 'none', 'minmax'"):
        ObjectiveConfig(margin_mse_teacher_normalization="percentile")
