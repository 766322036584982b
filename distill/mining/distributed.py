"""`distill mine` on many processes: query generation, retrieval and teacher scoring sharded by rank.

Launch: ``distill mine --config R --devices N [--num-nodes M]`` starts N local processes through
Lightning Fabric's launcher (``ddp_spawn`` on one node); under ``torchrun`` or SLURM (``srun``) the
processes already exist and Fabric's cluster environments (TorchElastic / SLURM) wire them up.
Collectives go through ``torch.distributed`` (gloo: only small Python objects travel), so
:func:`mine_on_ranks` runs under any launcher that initialised a process group.

How the work is split, each stage in fixed-size shards whose boundaries do not depend on the number
of processes (shard ``s`` goes to rank ``s mod world``):

* queries: the sampled passages, ``ShardSizes.passages`` per shard, through every generator;
* candidates: the queries, ``ShardSizes.queries`` per shard (one retriever build per rank);
* teacher scores: the *distinct* (query, passage) pairs not already in the score cache,
  ``ShardSizes.pairs`` per shard — a pair is scored by exactly one rank, once.

Each finished shard is one JSON file written atomically under ``.<output>.work/shards/``, named by
its index and a hash of its input, so a killed rank loses only the shard it was on and a restarted
job (with any number of processes) reuses every finished one. No rank writes the SQLite score cache
while others run: rank 0 alone merges the score shards into it at the end (one writer), fills the
query and candidate stage caches of :mod:`distill.mining.mine`, and then calls :func:`mine`, which
finds every stage cached and every score a cache hit. The lists are therefore written by the same
code, from the same queries, candidates and order, as a one-process run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from distill.atomic import check_writable, move_aside, write_json_atomic
from distill.data.corpora import DataError, load_retrieval_set
from distill.mining.mine import MineConfig, build_candidates, build_queries, candidate_cache, mine, stage_keys
from distill.retrieval import as_searched


@dataclass
class ShardSizes:
    """Work per shard file: small enough that a kill loses little, large enough that files stay few
    (12 M pairs → ~3000 score shards)."""

    passages: int = 256   # passages per query-generation shard
    queries: int = 1024   # queries per candidate shard
    pairs: int = 4096     # distinct teacher pairs per score shard


# -- process group ------------------------------------------------------------------------------
def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_rank() -> bool:
    return rank_and_world()[0] == 0


def _barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def _broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj) -> list:
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def launched_externally() -> bool:
    """True under torchrun (TorchElastic) or a SLURM job step with more than one task."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    return SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def wanted(devices: int | None, num_nodes: int) -> bool:
    """Whether ``distill mine`` should run distributed: more than one process asked for or launched."""
    for value, flag in ((devices, "--devices"), (num_nodes, "--num-nodes")):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    return (devices or 1) * num_nodes > 1 or launched_externally()


def launch(recipe: str | Path, output: str | Path | None, devices: int | None, num_nodes: int,
           shards: ShardSizes | None = None) -> Path:
    """Run the recipe on ``devices`` × ``num_nodes`` processes; returns the lists folder (on rank 0;
    the same path on the others once rank 0 has written it)."""
    from lightning.fabric import Fabric

    external = launched_externally()
    if devices is None:  # torchrun / srun already fixed the layout
        devices = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or 1)
    if num_nodes > 1 and not external:
        raise ValueError("--num-nodes > 1: start one `distill mine` per node with torchrun or srun "
                         "(see docs/distributed.md); --devices alone spawns processes on this node only")
    fabric = Fabric(accelerator="cpu", strategy="ddp" if external else "ddp_spawn",
                    devices=devices, num_nodes=num_nodes)
    return fabric.launch(_rank_main, str(recipe), None if output is None else str(output), shards, devices)


def _rank_main(fabric, recipe: str, output: str | None, shards: ShardSizes | None, devices: int) -> Path:
    import torch

    from distill.mining.recipe import run_recipe

    # ranks on one node share its cores; without this each would start one thread per core
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    if torch.cuda.is_available():  # a rank's teacher and encoders use its own GPU
        torch.cuda.set_device(fabric.local_rank % torch.cuda.device_count())
    return run_recipe(recipe, output, mine_with=lambda config: mine_on_ranks(config, shards))


# -- shards -------------------------------------------------------------------------------------
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _read_shard(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError) as err:  # a half-written file cannot exist (atomic), a damaged one can
        if path.exists():
            move_aside(path, f"unreadable mining shard ({str(err)[:80]})")
        return None


def sharded(folder: Path, tag: str, items: list, size: int, run: Callable[[list[list]], list],
            counts: dict, collect: bool = True) -> list | None:
    """Split ``items`` into shards of ``size``; this rank runs ``run`` on its missing shards (a list of
    shards in, one JSON-able result per shard out) and saves each atomically. After a barrier, every
    finished shard's result in shard order (when ``collect``), else None.

    ``counts[tag]`` records ``total`` shards and this rank's ``reused`` / ``computed`` ones."""
    rank, world = rank_and_world()
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    paths = [folder / f"{tag}-{s:05d}-{_digest(chunk)}.json" for s, chunk in enumerate(chunks)]
    mine_ = [s for s in range(rank, len(chunks), world)]
    todo = [s for s in mine_ if not (paths[s].is_file() and _read_shard(paths[s]) is not None)]
    counts[tag] = {"total": len(chunks), "reused": len(mine_) - len(todo), "computed": 0}
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        for s, result in zip(todo, run([chunks[s] for s in todo])):
            write_json_atomic(paths[s], {"data": result})
            counts[tag]["computed"] += 1
    _barrier()
    if not collect:
        return None
    out = []
    for s, path in enumerate(paths):
        data = _read_shard(path)
        if data is None:
            raise RuntimeError(f"{path}: shard {s} of {tag} is missing after every rank finished")
        out.append(data)
    return out


def _lazy_each(fn: Callable[[list], object]) -> Callable[[list[list]], object]:
    """``run`` for :func:`sharded` that computes (and so saves) one shard at a time."""
    return lambda chunks: (fn(chunk) for chunk in chunks)


# -- stages -------------------------------------------------------------------------------------
def _stage(work: Path, name: str, key: str, build: Callable[[], object]):
    """:func:`mine`'s stage cache, collective: every rank looks before rank 0 writes."""
    path = work / f"{name}.json"
    found = None
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            found = saved["data"] if isinstance(saved, dict) and saved.get("key") == key else None
        except ValueError:
            found = None  # mine() moves a corrupt one aside; here it is simply rebuilt and replaced
    if _gather(found is not None) != [True] * rank_and_world()[1]:
        found = None
        _barrier()  # everyone has looked before anyone replaces the file
        data = build()
        if is_main_rank():
            write_json_atomic(path, {"key": key, "data": data})
        _barrier()
        return data
    return found


def _sharded_generate(folder: Path, sizes: ShardSizes, counts: dict):
    """``generate`` for :func:`build_queries`: each rank runs the generators on its passage shards;
    results come back generator by generator, passages in order, as one process produces them."""
    from distill.mining.queries import SyntheticQuery, build_generators

    def generate(spec: dict, passages: list[tuple[str, str]]) -> list:
        generators = []

        def run(chunk):
            if not generators:  # load (an LLM) only on a rank that has work
                generators.extend(build_generators(spec))
            return [[asdict(q) for q in g.generate([tuple(p) for p in chunk])] for g in generators]

        per_shard = sharded(folder, "queries", [list(p) for p in passages], sizes.passages, _lazy_each(run), counts)
        n_gen = len(per_shard[0]) if per_shard else 0
        return [SyntheticQuery(**q) for g in range(n_gen) for shard in per_shard for q in shard[g]]

    return generate


def mine_on_ranks(config: MineConfig, sizes: ShardSizes | None = None) -> Path:
    """:func:`mine` with the work split over the ranks of the current process group (see the module
    docstring). Every rank calls it; every rank returns the output folder once rank 0 has written it."""
    from teachers.cache import SCHEMA, pair_key

    sizes = sizes or ShardSizes()
    rank, world = rank_and_world()
    output = Path(config.output)
    check_writable(output, "output", folder=True)
    work = output.parent / f".{output.name}.work"
    folder = work / "shards"
    counts: dict = {}
    rs = load_retrieval_set(config.corpus)
    qkey, ckey = stage_keys(config)

    qstats: dict = {}
    generate = _sharded_generate(folder, sizes, counts)
    queries = _stage(work, "queries", qkey,
                     lambda: {"rows": build_queries(config, rs, qstats, work, generate=generate), "stats": qstats})["rows"]
    if not queries:
        raise DataError(f"{config.corpus}: no training queries (check queries.split / queries.generate)")

    def retrieve(chunks: list[list[dict]]) -> list[list[dict]]:
        # one retriever build (BM25 index, dense corpus encoding) for all of this rank's shards
        # a rank-private candidate cache: ranks never write one file at once
        rows = build_candidates(config, rs, [q for chunk in chunks for q in chunk], folder / f"rank{rank}")
        out, at = [], 0
        for chunk in chunks:
            out.append(rows[at: at + len(chunk)])
            at += len(chunk)
        return out

    if rank == 0:  # build the shared BM25 index once before the other ranks open it
        if config.retrieval.bm25:
            from distill.retrieval import build_retriever
            build_retriever("bm25", rs)
    _barrier()
    candidates = _stage(work, "candidates", ckey,
                        lambda: [row for shard in sharded(folder, "candidates", queries, sizes.queries, retrieve, counts)
                                 for row in shard])
    if rank == 0:  # rank 0's final one-process mine() finds every query's candidates cached
        write_json_atomic(candidate_cache(config, work), {q["query_id"]: row for q, row in zip(queries, candidates)})

    # teacher pairs exactly as mine() forms them; distinct ones not yet cached, split into shards
    tc = config.teacher
    cache = tc.cache_path()
    teacher = tc.load(cached=False)  # scores go to rank shards; rank 0 merges them into the cache
    identity = teacher.identity
    searched = dict(zip(rs.doc_texts()[0], as_searched(rs.doc_texts()[1], rs.normalize_text)))
    pairs: dict[bytes, tuple[str, str]] = {}
    for qt, c in zip(as_searched([q["query"] for q in queries], rs.normalize_text), candidates):
        for d, _, _ in c["docs"]:
            pairs.setdefault(pair_key(identity, qt, searched[d]), (qt, searched[d]))
    todo = _broadcast(_uncached(cache, list(pairs)) if rank == 0 else None)  # one view of the cache
    keys = list(pairs)
    score_items = [list(pairs[keys[i]]) for i in todo]

    forward = {"pairs": 0}

    def score(chunk: list[list[str]]) -> list[float]:
        forward["pairs"] += len(chunk)
        return teacher.score([q for q, _ in chunk], [p for _, p in chunk]).tolist()

    scored = sharded(folder, "scores", score_items, sizes.pairs, _lazy_each(score), counts, collect=rank == 0)
    del teacher
    ranks = _gather({"rank": rank, "shards": counts, "teacher_forward_pairs": forward["pairs"]})
    if rank == 0:
        flat = [s for shard in scored for s in shard]
        _merge_scores(cache, [keys[i] for i in todo], flat, SCHEMA)
        mine(config)  # every stage cached, every score a hit: the one-process writer writes the lists
        stats_path = output / "stats.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        forward_total = sum(r["teacher_forward_pairs"] for r in ranks)
        stats["teacher"].update(misses=forward_total, hits=stats["teacher"]["pairs"] - forward_total)
        stats["distributed"] = {"world_size": world, "distinct_pairs": len(keys),
                                "pairs_scored": forward_total, "ranks": ranks}
        write_json_atomic(stats_path, stats)
        shutil.rmtree(folder, ignore_errors=True)  # merged into the stage caches and the score cache
    _barrier()
    return output


def _uncached(cache: Path, keys: list[bytes]) -> list[int]:
    """Indices of ``keys`` not in the score cache at ``cache`` (all of them when it does not exist)."""
    if not cache.is_file():
        return list(range(len(keys)))
    found: set[bytes] = set()
    conn = sqlite3.connect(str(cache), timeout=600)
    try:
        for i in range(0, len(keys), 900):  # SQLite before 3.32: at most 999 bound parameters
            chunk = keys[i:i + 900]
            found.update(k for (k,) in conn.execute(
                f"SELECT key FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk))
    except sqlite3.DatabaseError:
        return list(range(len(keys)))  # unreadable: score everything; CachedTeacher will move it aside
    finally:
        conn.close()
    return [i for i, k in enumerate(keys) if k not in found]


def _merge_scores(cache: Path, keys: list[bytes], scores: list[float], schema: str) -> None:
    """Insert the ranks' scores into the one SQLite cache (WAL, one transaction; rows another process
    wrote meanwhile are kept: same key → same score)."""
    if len(keys) != len(scores):
        raise RuntimeError(f"score shards hold {len(scores)} scores for {len(keys)} pairs")
    cache.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(cache), timeout=600, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(schema)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR IGNORE INTO scores (key, score) VALUES (?, ?)", zip(keys, scores))
        conn.execute("COMMIT")
    finally:
        conn.close()
