"""DistillationModule end to end on tiny random models: fit through the CLI, chunked = unchunked,
teacher fills missing scores, and a killed run resumes to the same result."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from factories import make_lists, make_tiny_bert, offline_env

from distill.losses import ObjectiveConfig
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    return {"bert": make_tiny_bert(base / "bert", dropout=0.0), "lists": make_lists(base / "lists.jsonl")}


def _fit_cli(args: list[str], pythonpath: Path | None = None, **kw) -> subprocess.Popen:
    env = offline_env()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # smoke.yaml as shipped trains the packaged student at 1e-4; a tiny random one needs a larger step
    return subprocess.Popen([sys.executable, "-m", "distill.cli", "fit", "--config", str(ROOT / "recipes/smoke.yaml"),
                             "--model.optimizer.lr", "1.0e-3", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _trainer(root: Path, **kw) -> L.Trainer:
    return L.Trainer(default_root_dir=str(root), accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, precision="32-true", **kw)


def test_fit_cli_exports_a_sentence_transformers_student_that_learned(tiny, tmp_path):
    proc = _fit_cli(["--model.student.name", str(tiny["bert"]), "--data.lists", str(tiny["lists"]),
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "6",
                     "--trainer.precision", "32-true"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    student = tmp_path / "student"
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["monitor"] == "dev/kl" and Path(metrics["selected_checkpoint"]).is_file()

    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(student), device="cpu").encode(["the cat sat"], convert_to_tensor=True)
    assert emb.shape == (1, 32)

    # the selected student fits the dev lists better than the untrained one
    def dev_kl(name: str) -> float:
        module = DistillationModule(StudentConfig(name=name), teacher=None)
        data = ListsDataModule(str(tiny["lists"]), list_size=4, batch_size=4, dev_fraction=0.25)
        return _trainer(tmp_path / "v").validate(module, datamodule=data, verbose=False)[0]["dev/kl"]

    assert dev_kl(str(student)) < dev_kl(str(tiny["bert"]))


def test_fit_output_is_progress_not_library_noise(tiny, tmp_path):
    """Without a terminal a fit prints progress lines, and none of the library messages
    distill.training.quiet silences (nor the ones whose cause was fixed)."""
    proc = _fit_cli(["--model.student.name", str(tiny["bert"]), "--data.lists", str(tiny["lists"]),
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "3",
                     "--trainer.precision", "bf16-mixed", "--checkpoint.every_n_train_steps", "1",
                     "--trainer.enable_progress_bar", "false", "--progress.every_n_seconds", "1e-6"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    for noise in ("tensorboardX", "litlogger", "not supported by the model summary", "LeafSpec",
                  "transfer_batch_to_device", "manual optimization", "def training_step",
                  "args parameter is intended", "Loading weights", "Writing model shards"):
        assert noise not in out, f"{noise!r} printed:\n{out[-3000:]}"
    progress = [line for line in out.splitlines() if line.startswith("distill-progress")]
    assert progress and "lists_per_s=" in progress[-1] and "left=" in progress[-1]
    assert (tmp_path / "student" / "modules.json").is_file()


def _one_step(bert: Path, lists: Path, root: Path, chunk_size: int | None) -> dict[str, torch.Tensor]:
    L.seed_everything(0)
    module = DistillationModule(StudentConfig(name=str(bert)), teacher=None,
                                objective=ObjectiveConfig(kl_weight=1.0, contrastive_weight=0.1),
                                optimizer=OptimizerConfig(lr=1e-2, warmup_ratio=0.0), chunk_size=chunk_size)
    data = ListsDataModule(str(lists), list_size=4, batch_size=8, dev_fraction=0.0)
    _trainer(root, max_steps=1, enable_checkpointing=False, num_sanity_val_steps=0).fit(module, datamodule=data)
    return {k: v.detach().clone() for k, v in module.student.state_dict().items()}


def test_chunked_training_step_equals_unchunked(tiny, tmp_path):
    whole = _one_step(tiny["bert"], tiny["lists"], tmp_path / "a", chunk_size=None)
    chunked = _one_step(tiny["bert"], tiny["lists"], tmp_path / "b", chunk_size=3)
    start = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None).student.state_dict()
    moved = max((whole[k] - start[k]).abs().max().item() for k in whole)
    assert moved > 1e-4  # the step really changed the weights
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], atol=1e-5, rtol=1e-4, msg=key)


class _OverlapTeacher:
    """A stand-in teacher that scores word overlap and counts its calls."""

    identity = "overlap"

    def __init__(self):
        self.pairs = 0

    def score(self, queries, passages):
        self.pairs += len(queries)
        return torch.tensor([float(len(set(q.split()) & set(p.split()))) for q, p in zip(queries, passages)])


def test_teacher_scores_only_the_missing_candidates(tiny, tmp_path):
    from distill.training.datamodule import collate_lists

    rows = [json.loads(line) for line in make_lists(tmp_path / "raw.jsonl", n_queries=3).read_text().splitlines()]
    rows[0]["candidates"][1]["teacher_score"] = None
    rows[2]["candidates"][3]["teacher_score"] = None
    batch = collate_lists(rows, list_size=4)
    module = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None)
    module._teacher = teacher = _OverlapTeacher()
    scores = module.fill_teacher_scores(batch)
    assert teacher.pairs == 2
    assert not torch.isnan(scores).any()
    q, p = rows[0]["query"], rows[0]["candidates"][1]["text"]
    assert scores[0, 1].item() == len(set(q.split()) & set(p.split()))
    assert scores[1, 0].item() == pytest.approx(rows[1]["candidates"][0]["teacher_score"])


def test_missing_scores_without_teacher_is_a_clear_error(tiny, tmp_path):
    from distill.training.datamodule import collate_lists

    rows = [json.loads(line) for line in make_lists(tmp_path / "raw.jsonl", n_queries=1, scored=False)
            .read_text().splitlines()]
    module = DistillationModule(StudentConfig(name=str(tiny["bert"])), teacher=None)
    with pytest.raises(ValueError, match="no teacher scores and the recipe names no teacher"):
        module.fill_teacher_scores(collate_lists(rows, list_size=4))


# 18 training lists in batches of 4: 5 steps an epoch. Step 12 is mid-epoch (the killed run's last
# checkpoint is step 11, one batch into epoch 2); step 15 is an epoch's end, killed after its validation.
@pytest.mark.parametrize("kill", [{"step": 12}, {"step": 15, "after_validation": True}], ids=["mid-epoch", "after-validation"])
def test_killed_run_resumes_to_the_same_result(tiny, tmp_path, kill):
    common = ["--model.student.name", str(tiny["bert"]), "--data.lists", str(tiny["lists"]),
              "--trainer.max_epochs", "8", "--trainer.precision", "32-true", "--checkpoint.every_n_train_steps", "1"]
    ref = _fit_cli([*common, "--trainer.default_root_dir", str(tmp_path / "ref")])
    out, _ = ref.communicate(timeout=900)
    assert ref.returncode == 0, out[-3000:]

    run = tmp_path / "killed"
    killer = json.dumps({"class_path": "kill_switch.KillAtStep", "init_args": kill})
    proc = _fit_cli([*common, "--trainer.default_root_dir", str(run), f"--trainer.callbacks+={killer}"],
                    pythonpath=ROOT / "tests")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    assert not (run / "student").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == kill["step"] - (0 if kill.get("after_validation") else 1)

    resumed = _fit_cli([*common, "--trainer.default_root_dir", str(run), "--ckpt_path", "last"])
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-3000:]
    a = json.loads((tmp_path / "ref" / "student" / "metrics.json").read_text())
    b = json.loads((run / "student" / "metrics.json").read_text())
    assert b["best_score"] == pytest.approx(a["best_score"], abs=1e-5)
    # the same weights, not merely a similar score
    from safetensors.torch import load_file

    wa = load_file(next((tmp_path / "ref" / "student").rglob("model.safetensors")))
    wb = load_file(next((run / "student").rglob("model.safetensors")))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize("recipe, field, problem", [
    ("model:\n  modle: x\n", "model.modle", "unknown key"),
    ("model:\n  student:\n    nmae: x\n", "model.student.nmae", "unknown key"),
    ("data:\n  batch_size: abc\n", "data.batch_size", "abc"),
])
def test_fit_recipe_errors_are_one_line_naming_file_and_field(tmp_path, capsys, recipe, field, problem):
    from distill.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe)
    assert main(["fit", "--config", str(ROOT / "recipes/smoke.yaml"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"distill: error: {bad}: {field}: ") and problem in err, err


def test_fit_driver_mines_missing_lists_and_the_datamodule_never_does(tmp_path, monkeypatch):
    from distill.training import cli

    calls = []
    monkeypatch.setattr("distill.mining.recipe.run_recipe", lambda path, output=None: calls.append((path, output)))
    cli.mine_missing_lists(str(tmp_path / "lists"), "recipes/mine/x.yaml")
    assert calls == [("recipes/mine/x.yaml", str(tmp_path / "lists"))]
    (tmp_path / "lists").mkdir()
    cli.mine_missing_lists(str(tmp_path / "lists"), "recipes/mine/x.yaml")  # present: nothing to mine
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match="no such lists; run `distill mine` or set data.mine_config"):
        ListsDataModule(str(tmp_path / "absent"), mine_config="recipes/mine/x.yaml").prepare_data()
