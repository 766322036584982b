"""THE mining dispatcher: read a recipe once, then mine (mining/mine.py) or transfer
(mining/transfer.py, a recipe with a ``source:`` key), mining the transfer's source first when its
lists are missing.

Every name a recipe gives (corpora, models, generators) is checked before any stage runs, so a
typo fails in a second with one line naming the recipe and the field, not after an hour of mining.
``distill mine`` and ``distill fit`` (when ``data.lists`` is missing) both end here.
"""
from __future__ import annotations

from pathlib import Path

from distill.mining.mine import MineConfig
from distill.mining.mine import mine as _mine_here
from distill.mining.queries.keywords import KeywordConfig
from distill.mining.settings import read_recipe
from distill.mining.transfer import TransferConfig, transfer

Recipe = MineConfig | TransferConfig


def load_recipe(path: str | Path) -> Recipe:
    """A mining recipe as its config: a :class:`TransferConfig` when it has ``source:``, else a
    :class:`MineConfig`. Fields are checked; names are not (see :func:`run_recipe`)."""
    raw = read_recipe(path)
    if "source" in raw:
        return TransferConfig.from_dict(raw, where=str(path))
    return MineConfig.from_dict(raw, where=str(path))


def run_recipe(path: str | Path, output: str | Path | None = None, *, devices: int | None = None,
               num_nodes: int = 1, mine_with=None) -> Path:
    """Run the mining recipe at ``path`` (its ``output:`` replaced by ``output`` when given);
    returns the folder of lists written.

    ``devices`` × ``num_nodes`` > 1, or a torchrun / SLURM launch, mines on many processes
    (``mining/distributed.py``, which calls back here on every rank with ``mine_with``)."""
    from distill.mining import distributed

    if mine_with is None and distributed.wanted(devices, num_nodes):
        load_recipe(path)  # a malformed recipe fails here, once, not in every spawned process
        return distributed.launch(path, output, devices, num_nodes)
    mine = mine_with or _mine_here
    config = load_recipe(path)
    if output is not None:
        config.output = str(output)
    if isinstance(config, MineConfig):
        config.check_names(str(path))
        return mine(config)
    source = MineConfig.from_dict(read_recipe(config.source), where=config.source)
    config.check_names(str(path))
    mine_source = not Path(source.output).exists()
    if mine_source:
        source.check_names(config.source)
    # the source's keyword word limits bound the Chinese spans the transfer picks among
    keywords = KeywordConfig.from_dict((source.queries.generate or {}).get("keywords"),
                                       f"{config.source}: queries.generate.keywords")
    if mine_source:
        mine(source)
    if not distributed.is_main_rank():
        return Path(config.output)  # rank 0 alone transfers
    return transfer(config, source.output, keywords)
