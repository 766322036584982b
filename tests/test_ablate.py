"""`distill ablate` end to end on a tiny random student: 2 arms × 2 seeds through the CLI, a killed
fit resumed, a rerun that trains nothing, the three files, the notebook over ablation.json; and the
config's checks and the run hash."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from factories import WORDS, make_lists, make_tiny_bert, offline_env

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"kl": {"model.objective.kl_weight": 1.0, "model.objective.contrastive_weight": 0.0},
        "infonce": {"model.objective.kl_weight": 0.0, "model.objective.contrastive_weight": 1.0}}


def make_eval_set(folder: Path) -> Path:
    """A CapRetrieval-format set over the factories' vocabulary, with two query types."""
    import random

    rng = random.Random(1)
    docs = {f"d{i}": " ".join(rng.sample(WORDS, 5)) for i in range(30)}
    queries, types = [], {"one_word": [], "two_words": []}
    for n, words in enumerate([["cat"], ["dog"], ["mat"], ["home"], ["query"], ["cat", "sat"], ["dog", "home"],
                               ["the", "model"], ["what", "is"], ["passage", "doc"]]):
        positives = [{"id": d, "score": 1} for d, t in docs.items() if all(w in t.split() for w in words)]
        if positives:
            text = " ".join(words)
            queries.append({"id": f"t{n}", "query": text, "positives": positives})
            types["one_word" if len(words) == 1 else "two_words"].append(text)
    folder.mkdir(parents=True)
    (folder / "candidates.jsonl").write_text("".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "types.json").write_text(json.dumps(types))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("ablate")
    bert = make_tiny_bert(base / "bert", dropout=0.1)
    lists = make_lists(base / "lists.jsonl")
    evalset = make_eval_set(base / "tinycap")
    (base / "tiny.yaml").write_text(yaml.safe_dump({"model": {"student": {"name": str(bert)}},
                                                    "data": {"lists": str(lists)}}))
    config = base / "ablation.yaml"
    config.write_text(yaml.safe_dump({
        "base": [str(ROOT / "recipes/smoke.yaml"), "tiny.yaml"],   # the second relative to this file
        "seeds": 2,
        "budget": {"trainer.max_steps": 6, "trainer.max_epochs": -1, "trainer.precision": "32-true"},
        "reference": "infonce",
        "arms": ARMS,
        "evaluation": {"teacher": "ms-marco-MiniLM-L-12-v2", "depth": 10, "batch_size": 16,
                       "datasets": {str(evalset): str(bert)}},
    }, sort_keys=False))
    return {"base": base, "bert": bert, "lists": lists, "evalset": evalset, "config": config}


def _env(tmp: Path) -> dict:
    return offline_env(DISTILL_CACHE=str(tmp / "cache"), PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")


def _ablate(tiny, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", "ablate", "--config", str(tiny["config"]),
                           "--output", str(out), *args], cwd=tiny["base"], env=_env(tiny["base"]),
                          capture_output=True, text=True, timeout=900)


def test_ablation_end_to_end_resumes_and_reuses(tiny, tmp_path, monkeypatch, capsys):
    from distill.ablate import run_ablation

    out = tmp_path / "abl"
    for key, value in _env(tiny["base"]).items():  # the fits inherit it (kill_switch importable, own cache)
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tiny["base"])
    # 1. a part of the ablation (one arm, one seed) whose fit is killed mid-run, as a crash would
    #    (in process, to spare a start-up; the CLI's one-line errors are checked below)
    killer = json.dumps({"class_path": "kill_switch.KillAtStep", "init_args": {"step": 4}})
    with pytest.raises(RuntimeError, match=r"fit of kl seed 0 failed \(killed by signal 9\)"):
        run_ablation(tiny["config"], out, arms=["kl"], seeds=[0], fit_args=[f"--trainer.callbacks+={killer}"])
    run = out / "runs" / "kl" / "seed0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "done.json").exists()
    assert not (out / "runs" / "infonce").exists()  # only the chosen part ran
    capsys.readouterr()

    # 2. the whole ablation through the CLI: the killed fit resumes from its last checkpoint, three more train
    full = _ablate(tiny, out)
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    assert f"[kl seed 0] resuming from {run / 'checkpoints' / 'last.ckpt'}" in full.stdout
    assert "0 finished (reused), 4 to train" in full.stdout
    assert "[infonce seed 1 | run 4/4] step 6/6" in full.stdout  # progress: arm, seed, step
    markers = {(a, s): json.loads((out / "runs" / a / f"seed{s}" / "done.json").read_text())
               for a in ARMS for s in (0, 1)}
    assert markers[("kl", 0)]["resumed"] and not markers[("kl", 1)]["resumed"]
    assert all(m["steps"] == 6 for m in markers.values())  # equal budget
    assert len({m["hash"] for m in markers.values()}) == 4
    assert not (run / "checkpoints").exists()  # a finished run keeps its student, not its checkpoints

    summary = json.loads((out / "ablation.json").read_text())
    assert set(summary["arms"]) == set(ARMS) and summary["reference"] == "infonce"
    ds = str(tiny["evalset"])
    zero = summary["baselines"]["zero-shot"][ds]
    teacher = summary["baselines"]["teacher"][ds]
    assert 0 < zero["ndcg@10"] <= 1 and 0 < teacher["ndcg@10"] <= 1 and zero["per_query"]
    for arm, entry in summary["arms"].items():
        assert entry["seeds"] == [0, 1] and set(entry["runs"]) == {"0", "1"}
        row = entry["datasets"][ds]
        per_seed = row["metrics"]["ndcg@10"]["per_seed"]
        assert len(per_seed) == 2 and all(0 < v <= 1 for v in per_seed)
        assert row["metrics"]["ndcg@10"]["mean"] == pytest.approx(sum(per_seed) / 2)
        # the per-seed numbers are the exported students' own evaluations, per query
        for s in (0, 1):
            report = entry["runs"][str(s)]["evaluation"][ds]
            assert report["ndcg@10"] == per_seed[s] and report["model"].endswith(f"seed{s}/student")
            assert set(report["per_query"]) == set(zero["per_query"])
        assert row["delta_zero_shot"] == pytest.approx(row["metrics"]["ndcg@10"]["mean"] - zero["ndcg@10"])
        assert 0 < row["p_zero_shot"] <= 1
        assert set(row["by_type"]) == {"one_word", "two_words"}
    kl = summary["arms"]["kl"]["datasets"][ds]
    assert 0 < kl["p_reference"] <= 1 and "delta_reference" not in summary["arms"]["infonce"]["datasets"][ds]
    md = (out / "ablation.md").read_text()
    assert f"## {ds}" in md and "| kl | 2/2 |" in md and "| infonce | 2/2 |" in md
    assert "teacher ceiling (ms-marco-MiniLM-L-12-v2" in md and "| one_word |" in md
    assert " ± " in md.split("| kl | 2/2 |")[1].splitlines()[0]  # two seeds: mean ± std
    from distill.ablate import markdown

    one = json.loads(json.dumps(summary))
    for entry in one["arms"].values():
        entry["seeds"] = [0]
    one_seed_row = markdown(one).split("| kl | 1/2 |")[1].splitlines()[0]
    assert "±" not in one_seed_row  # one seed shows no spread rather than a false ± 0.00
    png = (out / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # 3. again: every run is recognised by its configuration hash; nothing is retrained or re-evaluated
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "ablation.json"}
    run_ablation(tiny["config"], out)
    again = capsys.readouterr().out
    assert "4 finished (reused), 0 to train" in again and "evaluating" not in again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "ablation.json").read_text())["arms"] == summary["arms"]

    # 4. the notebook reads ablation.json
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DISTILL_ABLATION", str(out / "ablation.json"))
    monkeypatch.setenv("DISTILL_REPORTS", "")
    nb = nbformat.read(ROOT / "notebooks" / "ablation_report.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "ablation over 2 arms × 2 seeds" in text
    assert f"{100 * kl['metrics']['ndcg@10']['mean']:.2f}" in text


def test_run_hash_names_what_a_run_is(tiny, tmp_path):
    from distill.ablate import load_config, plan

    cfg = load_config(tiny["config"])
    runs = {(r.arm, r.seed): r for r in plan(cfg, tmp_path / "a")}
    again = {(r.arm, r.seed): r for r in plan(cfg, tmp_path / "b")}
    assert {k: r.hash for k, r in runs.items()} == {k: r.hash for k, r in again.items()}  # not where it lives
    assert len({r.hash for r in runs.values()}) == 4
    resolved = runs[("infonce", 1)].config
    assert resolved["seed_everything"] == 1 and resolved["data"]["seed"] == 1
    assert resolved["model"]["objective"]["kl_weight"] == 0.0
    assert resolved["model"]["objective"]["teacher_temperature"] == 0.3  # from smoke.yaml, untouched
    assert resolved["trainer"]["max_steps"] == 6 and resolved["evaluation"]["datasets"] == []

    # other lists at the same path are other runs
    lists = Path(resolved["data"]["lists"])
    saved = lists.read_text()
    try:
        lists.write_text(saved.replace('"q0"', '"q0x"'))
        changed = {(r.arm, r.seed): r.hash for r in plan(cfg, tmp_path / "a")}
    finally:
        lists.write_text(saved)
    assert all(changed[k] != runs[k].hash for k in runs)


def test_speed_only_settings_do_not_change_a_runs_hash():
    """Runs finished before model.attention / model.optimizer.fused existed are still found."""
    from distill.ablate import run_hash

    config = {"model": {"attention": "auto", "optimizer": {"lr": 1e-4, "fused": None}}, "trainer": {}}
    older = {"model": {"optimizer": {"lr": 1e-4}}, "trainer": {}}
    assert run_hash(config, "L") == run_hash(older, "L")
    faster = {"model": {"attention": "sdpa", "optimizer": {"lr": 1e-4, "fused": False}}, "trainer": {}}
    assert run_hash(faster, "L") == run_hash(older, "L")
    assert run_hash({"model": {"optimizer": {"lr": 2e-4}}, "trainer": {}}, "L") != run_hash(older, "L")


def test_a_later_setting_at_its_neutral_default_does_not_change_a_runs_hash():
    """export.fine_tuned_weight 1.0 exports what runs before it exported; any other weight is another run."""
    from distill.ablate import run_hash

    older = {"model": {"optimizer": {"lr": 1e-4}}, "trainer": {}, "export": {"precision": "fp32"}}
    plain = {**older, "export": {"precision": "fp32", "fine_tuned_weight": 1.0}}
    mixed = {**older, "export": {"precision": "fp32", "fine_tuned_weight": 0.5}}
    assert run_hash(plain, "L") == run_hash(older, "L")
    assert run_hash(mixed, "L") != run_hash(older, "L")


def test_fingerprint_ignores_the_caches_datasets_writes_beside_saved_lists(tmp_path):
    from datasets import Dataset, load_from_disk

    from distill.ablate import lists_fingerprint

    folder = tmp_path / "lists"
    Dataset.from_dict({"query": ["a", "b"], "scores": [[1.0, 0.5], [0.2, 0.9]]}).save_to_disk(str(folder))
    before = lists_fingerprint(folder)
    load_from_disk(str(folder)).map(lambda row: {"n": len(row["query"])})  # what a fit does: a cache-*.arrow appears
    assert any(p.name.startswith("cache-") for p in folder.iterdir())
    assert lists_fingerprint(folder) == before
    Dataset.from_dict({"query": ["a", "c"], "scores": [[1.0, 0.5], [0.2, 0.9]]}).save_to_disk(str(tmp_path / "other"))
    shutil.rmtree(folder)
    shutil.move(str(tmp_path / "other"), str(folder))
    assert lists_fingerprint(folder) != before  # other lists at the same path


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["arms"]["kl"].update({"trainer.max_steps": 9}), "arms.kl.trainer.max_steps: part of the budget"),
    (lambda c: c["arms"]["kl"].update({"seed_everything": 3}), "arms.kl.seed_everything: set by the ablation"),
    (lambda c: c.update(reference="nope"), "reference: 'nope' is not an arm"),
    (lambda c: c["arms"].update(bad={"model": {"objective": {"kl_weight": 0}}}), "arms.bad.model: write nested keys dotted"),
    (lambda c: c.update(seeds=0), "seeds: expected a positive count"),
    (lambda c: c.update(base=["missing.yaml"]), "base: missing.yaml: no such fit recipe"),
])
def test_config_errors_name_file_line_and_field(tiny, tmp_path, edit, message):
    from distill.ablate import load_config

    config = yaml.safe_load(tiny["config"].read_text())
    edit(config)
    path = tmp_path / "ablation.yaml"
    shutil.copy(tiny["base"] / "tiny.yaml", tmp_path / "tiny.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:") and message in str(err.value)
    line = int(str(err.value).split(":")[1])
    assert line >= 1


def test_an_arm_key_the_fit_rejects_is_one_line_naming_the_arm(tiny, tmp_path):
    config = yaml.safe_load(tiny["config"].read_text())
    config["arms"]["kl"]["model.objective.kl_wieght"] = 1.0
    shutil.copy(tiny["base"] / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "ablation.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "ablate", "--config", str(tmp_path / "ablation.yaml"),
                           "--output", str(tmp_path / "out")], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "arms.kl" in err[0] and "kl_wieght" in err[0], proc.stderr
    assert not (tmp_path / "out" / "runs").exists()
