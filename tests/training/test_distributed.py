"""distill/training/distributed: two gloo CPU ranks reproduce the single-process objective.

Normalisation: every loss term is a mean over the *local* lists. DDP averages gradients over
ranks, so with R ranks of b lists each the trained quantity is (1/R) Σ_r mean_local_r =
mean over the R·b global lists — the single-process loss — which only holds when every rank has
the same number of lists (b). Gradients for passages that served as another rank's negatives
travel back to their owner through the all-gather backward, so rank r's embedding gradient is
∂(Σ_k loss_k)/∂emb_r = R · ∂loss_global/∂emb_r; after DDP's average, R cancels.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distill.losses import DistillationObjective
from distill.training.distributed import (
    all_gather_with_grad,
    gather_object_list,
    gather_other_ranks,
    gather_other_ranks_objects,
)

WORLD = 2
BATCH, LIST, DIM, IN = 4, 3, 6, 5  # global batch: 4 lists of 3 candidates
WEIGHTS = {"kl_weight": 1.0, "contrastive_weight": 0.5, "margin_mse_weight": 0.2}


def global_batch():
    gen = torch.Generator().manual_seed(1234)
    layer = torch.nn.Linear(IN, DIM)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(DIM, IN, generator=gen))
        layer.bias.copy_(torch.randn(DIM, generator=gen))
    x_q = torch.randn(BATCH, IN, generator=gen)
    x_p = torch.randn(BATCH * LIST, IN, generator=gen)
    teacher = torch.randn(BATCH, LIST, generator=gen) * 3
    teacher[2] = torch.tensor([0.0, 4.0, 3.5])  # list 2 has a likely false negative
    # Shared documents across ranks: list 0's positive doc also appears in list 3 (on rank 1).
    positive0 = int(teacher[0].argmax())
    doc_ids = [[f"q{i}d{j}" for j in range(LIST)] for i in range(BATCH)]
    doc_ids[3][0] = doc_ids[0][positive0]
    mask = torch.ones(BATCH, LIST, dtype=torch.bool)
    mask[1, 2] = False  # padding on rank 0
    mask[3, 1] = False  # padding on rank 1
    doc_ids[1][2] = None
    doc_ids[3][1] = None
    return layer, x_q, x_p, teacher, doc_ids, mask


def embed(layer, x):
    return torch.nn.functional.normalize(layer(x), dim=-1)


def single_process():
    layer, x_q, x_p, teacher, doc_ids, mask = global_batch()
    q = embed(layer, x_q)
    p = embed(layer, x_p)
    q.retain_grad()
    p.retain_grad()
    out = DistillationObjective(**WEIGHTS)(q, p, teacher, doc_ids, candidate_mask=mask)
    out["loss"].backward()
    return {
        "loss": out["loss"].detach(),
        "q_grad": q.grad,
        "p_grad": p.grad,
        "w_grad": layer.weight.grad,
        "b_grad": layer.bias.grad,
    }


def _worker(rank: int, init: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        layer, x_q, x_p, teacher, doc_ids, mask = global_batch()
        local = BATCH // WORLD
        rows = slice(rank * local, (rank + 1) * local)
        prows = slice(rank * local * LIST, (rank + 1) * local * LIST)
        q = embed(layer, x_q[rows])
        p = embed(layer, x_p[prows])
        q.retain_grad()
        p.retain_grad()
        local_ids, local_mask = doc_ids[rows], mask[rows]

        extra = gather_other_ranks(p)
        extra_ids = [d for ids in gather_other_ranks_objects(local_ids) for d in ids]
        extra_mask = gather_other_ranks(local_mask.reshape(-1).to(torch.uint8)).bool()
        out = DistillationObjective(**WEIGHTS)(
            q,
            p,
            teacher[rows],
            local_ids,
            candidate_mask=local_mask,
            extra_passage_emb=extra,
            extra_doc_ids=extra_ids,
            extra_passage_mask=extra_mask,
        )
        out["loss"].backward()
        # What DDP does with the parameters' gradients: average over ranks.
        for param in layer.parameters():
            dist.all_reduce(param.grad)
            param.grad /= WORLD

        # Unequal first dims: rank r contributes r + 2 rows; grads return summed to the owner.
        rows_here = rank + 2
        leaf = torch.full((rows_here, 2), float(rank + 1), requires_grad=True)
        gathered = all_gather_with_grad(leaf)
        weights = torch.arange(gathered.shape[0], dtype=torch.float32).unsqueeze(1) * (rank + 1)
        (gathered * weights).sum().backward()
        others = gather_other_ranks(leaf.detach())

        torch.save(
            {
                "loss": out["loss"].detach(),
                "q_grad": q.grad,
                "p_grad": p.grad,
                "w_grad": layer.weight.grad,
                "b_grad": layer.bias.grad,
                "gathered": gathered.detach(),
                "leaf_grad": leaf.grad,
                "others": others,
                "objects": gather_object_list({"rank": rank}),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    init = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_worker, args=(init, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def test_loss_matches_single_process(ranks):
    expected = single_process()["loss"]
    mean_of_ranks = sum(r["loss"] for r in ranks) / WORLD
    assert torch.allclose(mean_of_ranks, expected, atol=1e-5, rtol=0)


def test_gradients_match_single_process(ranks):
    expected = single_process()
    local = BATCH // WORLD
    for rank, got in enumerate(ranks):
        rows = slice(rank * local, (rank + 1) * local)
        prows = slice(rank * local * LIST, (rank + 1) * local * LIST)
        # Embedding grads of a rank are ∂(Σ_k loss_k)/∂emb_r; DDP's 1/R makes them the global ones.
        torch.testing.assert_close(got["q_grad"] / WORLD, expected["q_grad"][rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["p_grad"] / WORLD, expected["p_grad"][prows], atol=1e-5, rtol=0)
        # The shared (replicated) parameter after the all-reduce average equals the global grad.
        torch.testing.assert_close(got["w_grad"], expected["w_grad"], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["b_grad"], expected["b_grad"], atol=1e-5, rtol=0)


def test_other_ranks_passages_receive_gradient():
    # Without gradient flowing back through the gather, rank 1's passages would miss the
    # contribution of rank 0's queries and the equality above would fail; check it is non-trivial.
    layer, x_q, x_p, teacher, doc_ids, mask = global_batch()
    q = embed(layer, x_q)
    p = embed(layer, x_p).detach().requires_grad_()
    out = DistillationObjective(**WEIGHTS)(q[:2], p[:6], teacher[:2], doc_ids[:2], mask[:2], p[6:], sum(doc_ids[2:], []), mask[2:].reshape(-1))
    out["loss"].backward()
    assert p.grad[6:].abs().sum() > 0


def test_unequal_sizes_gather_and_grad(ranks):
    sizes = [r + 2 for r in range(WORLD)]
    expected_gathered = torch.cat([torch.full((n, 2), float(r + 1)) for r, n in enumerate(sizes)])
    offsets = [sum(sizes[:r]) for r in range(WORLD)]
    for rank, got in enumerate(ranks):
        torch.testing.assert_close(got["gathered"], expected_gathered)
        # d/d leaf of Σ_k Σ_i w_k[i] · gathered[i] with w_k[i] = i · (k + 1), summed over ranks k
        positions = torch.arange(offsets[rank], offsets[rank] + sizes[rank], dtype=torch.float32)
        expected_grad = (positions * sum(k + 1 for k in range(WORLD))).unsqueeze(1).expand(-1, 2)
        torch.testing.assert_close(got["leaf_grad"], expected_grad)
        others = [r for r in range(WORLD) if r != rank]
        torch.testing.assert_close(got["others"], torch.cat([torch.full((sizes[r], 2), float(r + 1)) for r in others]))
        assert got["objects"] == [{"rank": r} for r in range(WORLD)]


def test_single_process_fallbacks():
    assert not dist.is_initialized()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert gather_other_ranks(x).shape == (0, 2)
    assert gather_object_list(["a"]) == [["a"]]
    assert gather_other_ranks_objects(["a"]) == []
