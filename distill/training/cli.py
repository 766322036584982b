"""`distill fit`: LightningCLI over DistillationModule + ListsDataModule.

Defaults that make a recipe safe to run as it is: checkpoints selected on the held-out dev KL
(saved every few steps and as ``last`` so a killed run resumes with ``--ckpt_path last``),
precision bf16-mixed where the hardware has bf16 units and 32-true elsewhere.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from distill.hardware import lightning_precision
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule
from distill.training.publish_callback import PublishSettings, PublishStudent


class DistillCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--evaluation.datasets", type=list[str], default=[],
                            help="evaluation sets monitored while training and reported at the end")
        parser.add_argument("--evaluation.every_n_epochs", type=int, default=1)
        parser.add_argument("--checkpoint.every_n_train_steps", type=int, default=50)
        parser.add_dataclass_arguments(PublishSettings, "publish", default=PublishSettings())  # publish_callback.py
        parser.set_defaults({"trainer.precision": lightning_precision("auto")})

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = cfg["trainer"]
        root = trainer.get("default_root_dir") or "runs/default"
        trainer["default_root_dir"] = root
        from lightning.pytorch.callbacks import ModelCheckpoint

        from distill.training.callbacks import ExportStudent, RetrievalMonitor

        datasets = list(cfg["evaluation"]["datasets"] or [])
        extra = [
            # selection: saved right after each validation, so the score belongs to the weights saved
            ModelCheckpoint(dirpath=str(Path(root) / "checkpoints"), monitor="dev/kl", mode="min",
                            save_top_k=1, filename="best-{step}"),
            # resumption: `last.ckpt` every few steps, whatever the dev score
            ModelCheckpoint(dirpath=str(Path(root) / "checkpoints"), save_last=True, save_top_k=0,
                            every_n_train_steps=cfg["checkpoint"]["every_n_train_steps"]),
            RetrievalMonitor(datasets, every_n_epochs=cfg["evaluation"]["every_n_epochs"]),
            ExportStudent(datasets),
            PublishStudent(PublishSettings(**cfg["publish"])),  # after ExportStudent: publishes its folder
        ]
        self._extra_callbacks = extra

    def _instantiate_trainer(self, config, callbacks):
        return super()._instantiate_trainer(config, list(callbacks) + getattr(self, "_extra_callbacks", []))


def run_fit(argv: list[str]) -> None:
    DistillCLI(DistillationModule, ListsDataModule, args=["fit", *argv], save_config_kwargs={"overwrite": True},
               seed_everything_default=0)
