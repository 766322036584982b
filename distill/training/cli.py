"""`distill fit`: LightningCLI over DistillationModule + ListsDataModule, and the fit driver.

Defaults that make a recipe safe to run as it is: checkpoints selected on the held-out dev KL
(saved right after each validation, and as ``last`` every few steps so a killed run resumes with
``--ckpt_path last``), precision bf16-mixed where the hardware has bf16 units and 32-true elsewhere.
The project's callbacks are ordinary LightningCLI callback groups (``add_lightning_class_args``),
so a recipe configures them like any other key: ``checkpoint.every_n_train_steps``,
``evaluation.datasets``, ``early_stopping.patience``.

Training never mines: when ``data.lists`` is missing, the driver runs ``data.mine_config``
(``distill.mining.recipe.run_recipe``) before any model is built.
"""
from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from distill.hardware import lightning_precision
from distill.training.callbacks import DevEarlyStopping, ExportStudent, ProgressLines, RetrievalMonitor
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule
from distill.training.publish_callback import PublishStudent
from distill.training.quiet import quiet_fit


def _checkpoint_dir(root: str | None) -> str:
    return str(Path(root or "runs/default") / "checkpoints")


class DistillCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # selection: saved right after each validation, so the score belongs to the weights saved
        parser.add_lightning_class_args(ModelCheckpoint, "selection")
        # resumption: `last.ckpt` every few steps, whatever the dev score
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # early stopping on a dev-list metric (default dev/kl); off until early_stopping.patience is set
        parser.add_lightning_class_args(DevEarlyStopping, "early_stopping")
        # evaluation sets: monitored while training (never select a checkpoint), reported at the end
        parser.add_lightning_class_args(RetrievalMonitor, "evaluation")
        parser.add_lightning_class_args(ExportStudent, "export")
        # after export (callbacks run in this order): `distill publish` on the exported student
        parser.add_lightning_class_args(PublishStudent, "publish")
        # speed in the logged metrics and, without a terminal, as periodic lines
        parser.add_lightning_class_args(ProgressLines, "progress")
        for key in ("datasets", "split", "batch_size", "precision"):
            parser.link_arguments(f"evaluation.{key}", f"export.{key}")
        for key in ("selection", "checkpoint"):
            parser.link_arguments("trainer.default_root_dir", f"{key}.dirpath", compute_fn=_checkpoint_dir)
        parser.set_defaults({
            "trainer.precision": lightning_precision("auto"),
            "trainer.default_root_dir": "runs/default",
            "selection.monitor": "dev/kl", "selection.mode": "min", "selection.save_top_k": 1,
            "selection.filename": "best-{step}",
            "checkpoint.save_last": True, "checkpoint.save_top_k": 0, "checkpoint.every_n_train_steps": 50,
        })

    def parse_arguments(self, parser, args) -> None:
        # A recipe mistake is one line naming the recipe file and the field (exit 2 through
        # distill.cli), not the usage text; `distill fit --help` still prints the usage.
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise RecipeError(recipe_error(str(err), args or sys.argv[1:])) from None

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        from distill.atomic import check_writable

        check_writable(cfg["trainer"]["default_root_dir"], "trainer.default_root_dir", folder=True)  # before any work
        mine_missing_lists(cfg["data"]["lists"], cfg["data"].get("mine_config"))


class RecipeError(ValueError):
    """A `distill fit` recipe that does not parse; the message is one line."""


def recipe_error(message: str, argv: list[str]) -> str:
    """jsonargparse's (multi-line) parse error → ``<recipe file>: <field>: <problem>``.

    The field is the dotted key the error names; the recipe is the last ``--config`` file that sets
    it (later files override earlier ones), else the command line.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    keys = re.findall(r'[Kk]ey "([^"]+)"', message) + re.findall(r"accept option '([^']+)'", message)
    field = next((k for k in reversed(keys) if "." in k), keys[-1] if keys else None)
    problem = next((line for line in reversed(lines) if re.search(r"[Ee]xpected|[Gg]ot value|not expected|"
                                                                  r"does not accept|invalid", line)), lines[-1] if lines else message)
    where = "command line"
    if field:
        for path in reversed(_config_files(argv)):
            if _sets(path, field):
                where = str(path)
                break
    if "does not accept option" in problem:
        problem = "unknown key"
    return f"{where}: {field}: {problem}" if field else f"{where}: {problem}"


def _config_files(argv: list[str]) -> list[Path]:
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def _sets(path: Path, field: str) -> bool:
    """Whether the YAML at ``path`` sets the dotted ``field`` (or a parent of it, for a typo'd key)."""
    try:
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    for part in field.split("."):
        if isinstance(node, dict) and "init_args" in node and part not in node:
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def mine_missing_lists(lists: str, mine_config: str | None) -> None:
    """The fit driver's "mine when missing": run ``mine_config`` into ``lists`` if ``lists`` does not exist.

    Under DDP the launcher re-runs this script on the other ranks only after the first process has
    passed this point, so they find the lists already written.
    """
    if Path(lists).exists() or not mine_config:
        return  # a missing folder without a recipe is reported by the datamodule
    # imported here: a run whose lists exist never loads the mining stack (BM25, JVM, LLM)
    from distill.mining.recipe import run_recipe

    run_recipe(mine_config, output=lists)


def run_fit(argv: list[str]) -> None:
    """`distill fit ARGV`: parse the recipe(s), mine missing lists, train, export the student."""
    # argv comes from distill.cli.main (so tests can call it in-process), not from sys.argv
    quiet_fit()
    DistillCLI(DistillationModule, ListsDataModule, args=["fit", *argv], save_config_kwargs={"overwrite": True},
               seed_everything_default=0,
               parser_kwargs={"exit_on_error": False, "fit": {"exit_on_error": False}})


def resolve_fit_config(argv: list[str]) -> dict:
    """The configuration ``distill fit ARGV`` would run, every default filled in, without building
    anything: the ``--config`` files merged in order (later ones override earlier ones key by key),
    then the command-line overrides. It is the fit's own parser, so a key the fit would reject is a
    ``ValueError`` here, with jsonargparse's message."""
    out, err = io.StringIO(), io.StringIO()
    argv0, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when args= and sys.argv both carry arguments
    try:
        with redirect_stdout(out), redirect_stderr(err):
            run_fit([*argv, "--print_config"])
    except SystemExit as stop:
        if stop.code not in (0, None):
            lines = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
            first = next((i for i, line in enumerate(lines) if "error:" in line), len(lines) - 1)
            raise ValueError(" ".join(lines[first:first + 2]) if lines else f"fit arguments rejected: {argv}") from None
    finally:
        sys.argv = argv0
    return yaml.safe_load(out.getvalue())
