"""Training lists → batches. Tokenization happens in the module (it owns the student's tokenizer)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.data.lists import load_lists, split_by_query


@dataclass
class ListBatch:
    """B lists of L candidates, list-major: passage ``i * L + j`` is candidate j of query i.

    ``teacher_scores`` is NaN where the list carried no score (the module fills those in);
    ``mask`` is False on padding (short lists are padded with a copy of their first candidate).
    """

    query_ids: list[str]
    queries: list[str]
    passages: list[str]
    doc_ids: list[list[str]]
    teacher_scores: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.queries)

    def to(self, device, non_blocking: bool = False) -> "ListBatch":
        # Lightning's default batch transfer calls this (it moves any object with a ``to``)
        self.teacher_scores = self.teacher_scores.to(device, non_blocking=non_blocking)
        self.mask = self.mask.to(device, non_blocking=non_blocking)
        return self


class _Lists(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate_lists(rows: list[dict], list_size: int) -> ListBatch:
    """Keep each list's first ``list_size`` candidates (the fused retrieval order) and pad."""
    passages, doc_ids, scores, masks = [], [], [], []
    for row in rows:
        cands = row["candidates"][:list_size]
        pad = list_size - len(cands)
        passages += [c["text"] for c in cands] + [cands[0]["text"]] * pad
        doc_ids.append([c["doc_id"] for c in cands] + [""] * pad)
        scores.append([math.nan if c["teacher_score"] is None else float(c["teacher_score"]) for c in cands]
                      + [0.0] * pad)
        masks.append([True] * len(cands) + [False] * pad)
    return ListBatch(
        query_ids=[r["query_id"] for r in rows], queries=[r["query"] for r in rows], passages=passages,
        doc_ids=doc_ids, teacher_scores=torch.tensor(scores, dtype=torch.float32),
        mask=torch.tensor(masks, dtype=torch.bool),
    )


class EpochSampler(Sampler[int]):
    """A permutation that is a function of (seed, epoch) alone, and can skip the batches a killed
    run had already trained on, so a resumed run sees exactly the data an uninterrupted run sees."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, samples already trained)

    def resume(self, at: tuple[int, int]) -> None:
        """Continue a killed run: ``at`` = (epoch, samples of that epoch already trained)."""
        self.epoch, self.resume_at = at[0], at

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        if self.resume_at is not None and self.resume_at[0] != epoch:
            self.resume_at = None  # the resumed epoch is over
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        skip = 0
        # Lightning may iterate more than once per epoch (its fetcher prefetches at setup), so the
        # skip holds for the whole resumed epoch; a checkpoint taken after the epoch's last batch
        # resumes at the next epoch and skips nothing.
        if self.resume_at is not None and self.resume_at[0] == self.epoch and self.resume_at[1] < self.size:
            skip = self.resume_at[1]
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.size


def top_scores(rows: list[dict], list_size: int) -> np.ndarray:
    """Each list's best teacher score among its first ``list_size`` candidates (NaN when it has none)."""
    tops = [max((c["teacher_score"] for c in row["candidates"][:list_size] if c["teacher_score"] is not None),
                default=math.nan) for row in rows]
    return np.asarray(tops, dtype=np.float64)


def score_percentiles(rows: list[dict], list_size: int, low: float = 1.0, high: float = 99.0) -> tuple[float, float] | None:
    """(p_low, p_high) of every teacher score of ``rows``' first ``list_size`` candidates (CADET's
    normalisation range); None when the lists carry no scores or all scores are equal."""
    scores = np.asarray([c["teacher_score"] for row in rows for c in row["candidates"][:list_size]
                         if c["teacher_score"] is not None], dtype=np.float64)
    if scores.size == 0:
        return None
    p_low, p_high = (float(v) for v in np.percentile(scores, [low, high]))
    return (p_low, p_high) if p_high > p_low else None


class ListsDataModule(L.LightningDataModule):
    """Mined lists, split by query into train and a seeded held-out dev part.

    Args:
        lists: a saved list dataset folder (``distill mine`` output) or a ``.jsonl`` of lists.
        mine_config: a ``recipes/mine/*.yaml``; `distill fit` runs it first when ``lists`` does not
            exist yet (the datamodule itself only reads lists).
        list_size: candidates per list (CADET: 20).
        batch_size: lists per optimiser step on each device.
        dev_fraction: share of queries held out for checkpoint selection (never the test sets).
        seed: the order in which training lists are visited (a function of seed and epoch).
        split_seed: which queries are held out as dev lists. Separate from ``seed`` so seeds of an
            ablation vary the order, not the lists trained on; 0 is the split every recipe used so far.
        max_lists: cap on training lists (quick runs).
        min_top_score_percentile: drop training lists whose top teacher score is below this
            percentile (0-100) of all training lists' top scores (CADET drops lists the teacher finds
            no good passage in); the dev lists are kept whole. None keeps every list.

    After ``setup``, ``score_percentiles`` is the (p1, p99) of every teacher score of the training
    lists (their first ``list_size`` candidates), for ``teacher_normalization: percentile``.
    """

    def __init__(self, lists: str, mine_config: str | None = None, list_size: int = 20, batch_size: int = 16,
                 dev_fraction: float = 0.1, seed: int = 0, split_seed: int = 0, num_workers: int = 0,
                 max_lists: int | None = None, min_top_score_percentile: float | None = None):
        super().__init__()
        if list_size < 2:
            raise ValueError(f"list_size must be >= 2, got {list_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if min_top_score_percentile is not None and not 0 <= min_top_score_percentile <= 100:
            raise ValueError(f"min_top_score_percentile must be in [0, 100] or null, got {min_top_score_percentile}")
        self.lists, self.mine_config = lists, mine_config
        self.list_size, self.batch_size = list_size, batch_size
        self.dev_fraction, self.seed, self.num_workers, self.max_lists = dev_fraction, seed, num_workers, max_lists
        self.split_seed, self.min_top_score_percentile = split_seed, min_top_score_percentile
        self.score_percentiles: tuple[float, float] | None = None
        self.train_rows: list[dict] = []
        self.dev_rows: list[dict] = []
        self._sampler: EpochSampler | None = None
        self._resume_at: tuple[int, int] | None = None

    # Resumption lives in the datamodule's own checkpoint entry, not in a stateful DataLoader:
    # Lightning builds the train loader before it restores loop state (configure_optimizers asks
    # for estimated_stepping_batches), so a loader's load_state_dict is never called on resume,
    # whereas the datamodule is restored before anything is built.
    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        loop = self.trainer.fit_loop
        # ``processed``: batches whose step ran (the checkpoint is written in on_train_batch_end)
        return {"epoch": loop.epoch_progress.current.processed,
                "batches_done": loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" not in state:
            return
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]) * self.batch_size)
        if self._sampler is not None:
            self._sampler.resume(self._resume_at)

    def prepare_data(self) -> None:
        # Training never mines: `distill fit` (training/cli.py) mines data.mine_config before this runs.
        if not Path(self.lists).exists():
            raise FileNotFoundError(f"{self.lists}: no such lists; run `distill mine` or set data.mine_config")

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows:
            return
        ds = load_lists(self.lists)
        train, dev = split_by_query(ds, self.dev_fraction, self.split_seed)
        if self.max_lists is not None:
            train = train.select(range(min(self.max_lists, len(train))))
        if len(train) == 0:
            raise ValueError(f"{self.lists}: no training lists left after the dev split")
        train_rows = train.to_list()
        if self.min_top_score_percentile is not None:
            train_rows = self._drop_low_top_lists(train_rows)
        self.train_rows, self.dev_rows = train_rows, dev.to_list()
        self.score_percentiles = score_percentiles(self.train_rows, self.list_size)

    def _drop_low_top_lists(self, rows: list[dict]) -> list[dict]:
        tops = top_scores(rows, self.list_size)
        if np.isnan(tops).any():
            raise ValueError(f"{self.lists}: data.min_top_score_percentile needs teacher scores, but "
                             f"{int(np.isnan(tops).sum())} training lists have none (query {rows[int(np.argmax(np.isnan(tops)))]['query_id']})")
        threshold = float(np.percentile(tops, self.min_top_score_percentile))
        kept = [row for row, top in zip(rows, tops) if top >= threshold]
        if self.trainer is None or self.trainer.is_global_zero:
            print(f"data: dropped {len(rows) - len(kept)} of {len(rows)} training lists whose top teacher score is "
                  f"below {threshold:.4f} (percentile {self.min_top_score_percentile:g} of the lists' top scores)",
                  flush=True)
        return kept

    def _collate(self):
        return functools.partial(collate_lists, list_size=self.list_size)

    def train_dataloader(self) -> DataLoader:
        self._sampler = EpochSampler(len(self.train_rows), self.seed)
        if self._resume_at is not None:
            self._sampler.resume(self._resume_at)
        return DataLoader(_Lists(self.train_rows), batch_size=self.batch_size, sampler=self._sampler,
                          num_workers=self.num_workers, collate_fn=self._collate())

    def val_dataloader(self) -> DataLoader | list:
        if not self.dev_rows:
            return []
        return DataLoader(_Lists(self.dev_rows), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=self._collate())
