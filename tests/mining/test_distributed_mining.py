"""`distill mine` on 2 gloo CPU processes: the same lists as one process, and a killed rank's
finished shards reused by the restarted job. Tiny BEIR folder, tiny random teacher and student, real BM25."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from factories import make_tiny_bert
from test_mine import tiny_beir
from factories import make_cross_encoder

from distill.data.lists import load_lists
from distill.mining import distributed
from distill.mining.distributed import ShardSizes
from distill.mining.recipe import run_recipe

# small shards, so each rank gets several of every stage (8 passages, ~10 queries, ~40 pairs)
SIZES = ShardSizes(passages=3, queries=3, pairs=5)
WORLD = 2


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """recipe(name) → a recipe writing lists/<name> with its own score cache (so no run sees another's)."""
    root = tmp_path_factory.mktemp("ddp_mine")
    os.environ["DISTILL_CACHE"] = str(root / "cache")  # inherited by the spawned ranks
    make_cross_encoder(root / "teacher")
    base = {
        "corpus": str(tiny_beir(root / "beir")), "seed": 0,
        "queries": {"split": "train", "passages": 8, "generate": {"keywords": {"language": "en", "per_passage": 1}}},
        "retrieval": {"bm25": True, "dense": str(make_tiny_bert(root / "student")), "depth": 8, "list_size": 4},
        "teacher": {"name": str(root / "teacher"), "batch_size": 8},
        "filter": {"source_top_k": None},
    }

    def recipe(name: str) -> Path:
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "output": str(root / "lists" / name),
                                        "teacher": {**base["teacher"], "cache": str(root / f"{name}.sqlite")}}))
        return path

    yield recipe
    os.environ.pop("DISTILL_CACHE", None)


@pytest.fixture(scope="module")
def one_process(recipes):
    return load_lists(run_recipe(recipes("one"))).to_list()


def assert_same_lists(got: list[dict], expected: list[dict]) -> None:
    assert [r["query_id"] for r in got] == [r["query_id"] for r in expected]  # same queries, same order
    for g, e in zip(got, expected):
        assert {k: g[k] for k in ("query", "query_type", "source_id")} == {k: e[k] for k in ("query", "query_type", "source_id")}
        strip = lambda row: [{k: c[k] for k in ("doc_id", "text", "bm25_rank", "dense_rank")} for c in row["candidates"]]
        assert strip(g) == strip(e)  # same candidates, same order
        for cg, ce in zip(g["candidates"], e["candidates"]):
            assert abs(cg["teacher_score"] - ce["teacher_score"]) <= 1e-5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_killed_after_one_score_shard(rank: int, init: str, recipe: str) -> None:
    """A rank of a mining job; rank 1 dies (as a killed process would) when it starts its second score shard."""
    import torch

    from teachers.base import Teacher

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    if rank == 1:
        score, calls = Teacher.score, []

        def dying(self, queries, passages):
            calls.append(len(queries))
            if len(calls) == 2:
                os._exit(9)
            return score(self, queries, passages)

        Teacher.score = dying
    run_recipe(recipe, mine_with=lambda config: distributed.mine_on_ranks(config, SIZES))


def test_two_processes_write_the_lists_of_one_and_a_killed_rank_loses_only_its_shard(recipes, one_process):
    # One job on 2 ranks, rank 1 killed in its second teacher-score shard; then the job restarted.
    # (One scenario, two launches: each launch starts a JVM and the models in both ranks.)
    recipe = recipes("two")
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_rank_killed_after_one_score_shard, args=(f"tcp://127.0.0.1:{_free_port()}", str(recipe)),
                 nprocs=WORLD, join=True)
    shards = recipe.parent / "lists" / ".two.work" / "shards"
    owner = lambda path: int(path.name.split("-")[1]) % WORLD
    for stage in ("queries", "candidates"):  # both ranks did part of every stage before the kill
        assert {owner(p) for p in shards.glob(f"{stage}-*.json")} == set(range(WORLD)), stage
    finished = sorted(shards.glob("scores-*.json"))
    assert sum(owner(p) == 1 for p in finished) == 1  # rank 1 finished exactly one score shard before it died
    finished_pairs = sum(len(json.loads(p.read_text())["data"]) for p in finished)
    assert not (recipe.parent / "lists" / "two").exists()

    out = distributed.launch(recipe, None, devices=WORLD, num_nodes=1, shards=SIZES)
    assert_same_lists(load_lists(out).to_list(), one_process)  # same queries, candidates, order; scores to 1e-5
    stats = json.loads((out / "stats.json").read_text())["distributed"]
    assert stats["world_size"] == WORLD
    assert sum(r["shards"]["scores"]["reused"] for r in stats["ranks"]) == len(finished)
    total = stats["ranks"][0]["shards"]["scores"]["total"]
    assert sum(r["shards"]["scores"]["computed"] for r in stats["ranks"]) == total - len(finished)
    # no pair scored twice: before and after the kill, the teacher saw each distinct pair once
    assert stats["pairs_scored"] == stats["distinct_pairs"] - finished_pairs
    # the query and candidate stages finished before the kill: not redone at all
    assert all("queries" not in r["shards"] and "candidates" not in r["shards"] for r in stats["ranks"])
    with sqlite3.connect(str(recipe.with_suffix(".sqlite"))) as conn:  # rank 0 merged every shard into the cache
        assert conn.execute("SELECT count(*) FROM scores").fetchone()[0] == stats["distinct_pairs"]
    assert not shards.exists()  # merged, then removed


def test_cli_flags_are_checked(recipes):
    from distill.cli import main

    assert main(["mine", "--config", str(recipes("flags")), "--devices", "0"]) == 2
    assert main(["mine", "--config", str(recipes("flags")), "--devices", "1", "--num-nodes", "2"]) == 2


def test_ddp_recipe_keeps_the_global_batch_of_one_process(monkeypatch):
    """recipes/capretrieval-en/ddp.yaml over a method: DDP on 2 devices at half the per-device batch, so the
    global batch (and with it the loss, the negatives and the learning rate) is base.yaml's."""
    from distill.training.cli import resolve_fit_config

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    folder = "recipes/capretrieval-en"
    base = resolve_fit_config(["--config", f"{folder}/base.yaml", "--config", f"{folder}/combined.yaml"])
    ddp = resolve_fit_config(["--config", f"{folder}/base.yaml", "--config", f"{folder}/combined.yaml",
                              "--config", f"{folder}/ddp.yaml"])
    assert ddp["trainer"]["strategy"] == "ddp"
    world = ddp["trainer"]["devices"] * ddp["trainer"]["num_nodes"]
    assert world > 1 and ddp["data"]["batch_size"] * world == base["data"]["batch_size"] * base["trainer"]["devices"]
    assert ddp["model"] == base["model"]  # same objective, optimizer and learning rate
