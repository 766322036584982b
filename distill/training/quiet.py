"""What a fit does not print: library messages that tell a `distill fit` user nothing they can act on.

Each is silenced here on purpose, by its exact text, with the reason beside it; a message not listed
still reaches the user. Messages whose cause was ours were fixed at the cause instead (the batch moves
to the device through ``ListBatch.to``, which Lightning calls itself, so the module no longer
overrides ``transfer_batch_to_device``).
"""
from __future__ import annotations

import logging
import sys
import warnings

# message regexes, each with why it is not worth a user's attention
SILENCED_WARNINGS = [
    # no TensorBoard installed: Lightning falls back to its CSV logger, which is the logger we want;
    # a user who installs tensorboard gets TensorBoard without being told either
    r"Starting from v1\.9\.0, `tensorboardX` has been removed",
    # the summary's size column is an estimate either way; parameters are counted exactly
    r"Precision .* is not supported by the model summary",
    # raised inside Lightning's own pytree use (torch deprecation), nothing a recipe can change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # GradCache steps the optimiser by hand; the resume checkpoint must hold the weights *after* the
    # step it is named for, which is what Lightning saves (the warning prints a page of sample code)
    r"Using ModelCheckpoint with manual optimization",
    # `distill fit` passes its arguments to LightningCLI explicitly (tests call it in-process)
    r"LightningCLI's args parameter is intended",
]


class _DropCloudTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()  # an advert for a hosted logger, every run


def quiet_fit() -> None:
    """Install the filters above (idempotent); without a terminal, also turn off transformers'
    per-file progress bars (``Loading weights``, ``Writing model shards``), which in a log are noise."""
    for pattern in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropCloudTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropCloudTip())
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
