"""A callback the resume test adds to a real `distill fit` run: SIGKILL at a chosen step, so the kill
lands at the same place whatever the machine's load (polling from outside did not)."""
from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """Kill the process in ``on_train_batch_end`` once ``global_step`` reaches ``step`` (before that
    step's checkpoint is written, as a crash would), or at the end of that step's validation."""

    def __init__(self, step: int, after_validation: bool = False):
        self.step, self.after_validation = step, after_validation

    def on_train_batch_end(self, trainer, *args) -> None:
        if not self.after_validation and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_end(self, trainer, *args) -> None:
        if self.after_validation and not trainer.sanity_checking and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
