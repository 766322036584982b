"""Callbacks: evaluation-set monitoring (never selects a checkpoint), early stopping on the dev lists,
the final student export, and training speed as metrics and progress lines (``PublishStudent`` sits in
``publish_callback.py``)."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from distill.atomic import write_json_atomic
from distill.evaluation.evaluate import evaluate_encoder


class RetrievalMonitor(Callback):
    """Evaluates the student on named evaluation sets with `distill evaluate`'s own code.

    Logged under ``monitor/<set>/...`` for watching a run and for the final report. Test labels must
    not steer training, so no checkpoint callback or early stopping may monitor these keys.
    """

    def __init__(self, datasets: list[str] | None = None, every_n_epochs: int = 1, split: str = "test",
                 batch_size: int = 64, precision: str = "fp32"):
        self.datasets = list(datasets or [])
        self.every_n_epochs = every_n_epochs
        self.split = split
        self.batch_size = batch_size
        self.precision = precision  # of the evaluation, whatever the training precision (fp32: exact)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.datasets or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        for name in self.datasets:
            report = evaluate_encoder(pl_module.student, name, self.split, batch_size=self.batch_size,
                                      precision=self.precision)
            for metric in ("ndcg@10", "recall@100", "mrr@10"):
                pl_module.log(f"monitor/{name}/{metric}", report.metrics[metric], rank_zero_only=True)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for cb in trainer.callbacks:
            monitored = getattr(cb, "monitor", None)
            if monitored and str(monitored).startswith("monitor/"):
                raise ValueError(f"{type(cb).__name__} monitors {monitored!r}: evaluation-set metrics must "
                                 "never select checkpoints or stop a run; monitor a dev/ metric")


class DevEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping on a dev-list metric (default ``dev/kl``), checked after each
    validation; off unless ``patience`` is a positive number of validations without improvement.

    Only ``dev/`` keys may be monitored: the dev lists are held-out training lists, whereas the
    evaluation sets (``monitor/``) must never steer a run.
    """

    def __init__(self, monitor: str = "dev/kl", patience: int | None = None, mode: str = "min",
                 min_delta: float = 0.0, check_finite: bool = True, verbose: bool = False):
        if not str(monitor).startswith("dev/"):
            raise ValueError(f"early_stopping.monitor: {monitor!r} is not a dev-list metric (dev/...); "
                             "evaluation-set metrics must never stop a run")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 0):
            raise ValueError(f"early_stopping.patience must be a non-negative integer or null, got {patience!r}")
        self.enabled = bool(patience)
        self.stopped_at_step: int | None = None
        super().__init__(monitor=monitor, patience=patience or 0, mode=mode, min_delta=min_delta,
                         check_finite=check_finite, verbose=verbose, check_on_train_epoch_end=False)

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        stopping = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not stopping and self.stopped_at_step is None:
            self.stopped_at_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            super().on_train_epoch_end(trainer, pl_module)


class ExportStudent(Callback):
    """At the end of fit: the selected (best dev) student → ``<default_root_dir>/student`` as a
    sentence-transformers folder, with its evaluation-set metrics in ``student/metrics.json``.

    ``fine_tuned_weight`` below 1 exports ``w · fine-tuned + (1 − w) · the model training started
    from`` (WiSE-FT, ``students.interpolate``); the fine-tuned student itself goes to
    ``<dirname>-fine-tuned`` beside it, and the checkpoints keep the fine-tuned weights.
    """

    def __init__(self, datasets: list[str] | None = None, split: str = "test", batch_size: int = 64,
                 dirname: str = "student", precision: str = "fp32", fine_tuned_weight: float = 1.0):
        from students.interpolate import check_fine_tuned_weight

        self.datasets = list(datasets or [])
        self.split = split
        self.batch_size = batch_size
        self.dirname = dirname
        self.precision = precision
        self.fine_tuned_weight = check_fine_tuned_weight(fine_tuned_weight, "export.fine_tuned_weight")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from students import save_sentence_transformers

        selected = "last"
        end = {"global_step": trainer.global_step, "epoch": trainer.current_epoch}
        at = dict(end)  # where the exported weights come from
        ckpt = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor), None)
        if ckpt is not None and ckpt.best_model_path and Path(ckpt.best_model_path).is_file():
            saved = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
            pl_module.load_state_dict(saved["state_dict"])
            selected = ckpt.best_model_path
            at = {"global_step": saved.get("global_step"), "epoch": saved.get("epoch")}
        best = ckpt.best_model_score if ckpt is not None else None
        if best is not None and not torch.isfinite(best):
            raise RuntimeError(f"{selected}: selected on {ckpt.monitor} = {float(best)}, not a finite score; "
                               "the student is not exported")
        bad = [name for name, p in pl_module.student.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise RuntimeError(f"{selected}: {len(bad)} student parameters are not finite (first: {bad[0]}); "
                               "the student is not exported")
        out = Path(trainer.default_root_dir) / self.dirname
        if self.fine_tuned_weight < 1:
            # the fine-tuned end too, so other weights are one `distill interpolate` away, not a new fit
            save_sentence_transformers(pl_module.student, out.with_name(f"{out.name}-fine-tuned"))
            self._interpolate_with_base(pl_module)
        save_sentence_transformers(pl_module.student, out)
        metrics = {"selected_checkpoint": selected, "monitor": ckpt.monitor if ckpt else None,
                   "fine_tuned_weight": self.fine_tuned_weight,
                   "best_score": float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None,
                   "selected": at, "end_of_training": end,
                   "stopped_early_at_step": next((cb.stopped_at_step for cb in trainer.callbacks
                                                  if getattr(cb, "stopped_at_step", None) is not None), None),
                   "evaluation": {}}
        objective = getattr(pl_module, "objective", None)
        if objective is not None and hasattr(objective, "get_extra_state"):
            metrics["objective"] = objective.get_extra_state()  # percentiles / auto temperature trained with
        for name in self.datasets:
            report = evaluate_encoder(pl_module.student, name, self.split, batch_size=self.batch_size,
                                      precision=self.precision)
            metrics["evaluation"][name] = report.to_json()
            print(report.table())
        write_json_atomic(out / "metrics.json", metrics)
        print(f"student written to {out}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fine_tuned_weight < 1 and trainer.is_global_zero:
            from students.interpolate import check_interpolable

            # fail now, not after training; the base is loaded again at export rather than held in memory
            # beside the student for the whole run
            check_interpolable(pl_module.student, self._base(pl_module))

    @staticmethod
    def _base(pl_module: L.LightningModule):
        from students import load_student

        return load_student(pl_module.student_config.name)

    def _interpolate_with_base(self, pl_module: L.LightningModule) -> None:
        from students.interpolate import interpolate_weights

        name = pl_module.student_config.name
        interpolate_weights(pl_module.student, self._base(pl_module), self.fine_tuned_weight)
        print(f"exported weights: {self.fine_tuned_weight:g} x fine-tuned + {1 - self.fine_tuned_weight:g} x {name} (WiSE-FT)")


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class ProgressLines(Callback):
    """Training speed for people and drivers alike.

    Logs ``perf/steps_per_s``, ``perf/lists_per_s``, ``perf/seconds_left`` and ``perf/peak_rss_gb``
    (the process's peak resident memory so far) every step (lists/s also on the progress bar),
    and — when there is no progress bar to look at (output not a terminal, or
    ``trainer.enable_progress_bar: false``), or ``always`` — prints one line every
    ``every_n_seconds`` and at the first and last step::

        distill-progress step=12 total=118 elapsed=60.0 steps_per_s=0.200 lists_per_s=3.20 left=530 peak_rss_gb=4.1 loss=1.2345

    (`distill ablate` parses these from its fits.) ``every_n_seconds: 0`` prints nothing.
    """

    PREFIX = "distill-progress"

    def __init__(self, every_n_seconds: float = 30.0, always: bool = False):
        if every_n_seconds < 0:
            raise ValueError(f"progress.every_n_seconds must be >= 0, got {every_n_seconds}")
        self.every_n_seconds, self.always = every_n_seconds, always
        self._start = self._last = None
        self._window: list[tuple[float, int]] = []  # (time, lists) of recent steps

    def _printing(self, trainer: L.Trainer) -> bool:
        if not self.every_n_seconds or not trainer.is_global_zero:
            return False
        import sys

        return self.always or not trainer.progress_bar_callback or not sys.stdout.isatty()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        self._last, self._window = None, [(self._start, 0)]
        if self._printing(trainer):
            self._print(trainer, {})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        now = time.monotonic()
        self._window = (self._window + [(now, len(batch) if hasattr(batch, "__len__") else 0)])[-21:]
        span = now - self._window[0][0]
        steps = len(self._window) - 1
        total = trainer.estimated_stepping_batches
        rates = {}
        if span > 0 and steps:
            rates = {"steps_per_s": steps / span, "lists_per_s": sum(n for _, n in self._window[1:]) / span}
            if total != float("inf"):
                rates["left"] = max(0.0, (total - trainer.global_step) / rates["steps_per_s"])
            rates["peak_rss_gb"] = _peak_rss_gb()
            for key, value in rates.items():
                name = "perf/seconds_left" if key == "left" else f"perf/{key}"
                pl_module.log(name, value, prog_bar=key == "lists_per_s", on_step=True, on_epoch=False,
                              batch_size=1, rank_zero_only=True)
        if not self._printing(trainer):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            rates["loss"] = float(loss)
        if self._last is None or now - self._last >= self.every_n_seconds or trainer.global_step >= total:
            self._print(trainer, rates)
            self._last = now

    def _print(self, trainer: L.Trainer, rates: dict) -> None:
        elapsed = time.monotonic() - self._start
        extra = ""
        if "steps_per_s" in rates:
            extra = f" steps_per_s={rates['steps_per_s']:.3f} lists_per_s={rates['lists_per_s']:.2f}"
        if "left" in rates:
            extra += f" left={rates['left']:.0f}"
        if "peak_rss_gb" in rates:
            extra += f" peak_rss_gb={rates['peak_rss_gb']:.2f}"
        if "loss" in rates:
            extra += f" loss={rates['loss']:.4f}"
        total = trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else -1
        print(f"{self.PREFIX} step={trainer.global_step} total={total} elapsed={elapsed:.1f}{extra}", flush=True)
