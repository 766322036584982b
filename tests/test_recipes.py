"""The shipped recipes, as `distill fit` resolves them: a method file over its data set's base.yaml
changes only what it names (nested model.objective.* keys merge key by key, the rest of the base
stays), and smoke.yaml runs as shipped (its lists are in the repository, its student is packaged)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.training.cli import resolve_fit_config

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted(p for p in ROOT.glob("recipes/*/*.yaml")
                 if p.parent.name != "mine" and p.name not in ("base.yaml", "ablation.yaml", "ddp.yaml", "gtr-projection.yaml", "best.yaml"))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_data_set_has_a_base_and_the_three_methods():
    datasets = {p.parent.name for p in ROOT.glob("recipes/*/base.yaml")}
    assert datasets == {"capretrieval", "capretrieval-en", "scifact"}
    for ds in datasets:
        extra = {"cadet"} if ds == "capretrieval-en" else set()  # the published method's training options
        assert {p.stem for p in METHODS if p.parent.name == ds} == {"infonce", "distill", "combined", *extra}


@pytest.mark.parametrize("method", METHODS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_method_file_overrides_only_what_it_names(method, monkeypatch):
    monkeypatch.chdir(ROOT)
    base_path = method.parent / "base.yaml"
    base = resolve_fit_config(["--config", str(base_path)])
    merged = resolve_fit_config(["--config", str(base_path), "--config", str(method)])
    named = _flatten(yaml.safe_load(method.read_text()))
    assert len(named) <= (7 if method.stem == "cadet" else 4)  # says only what differs
    flat_base, flat_merged = _flatten(base), _flatten(merged)
    for key, value in flat_merged.items():
        expected = named.get(key, flat_base[key])
        assert value == expected, key
    weights = (merged["model"]["objective"]["kl_weight"], merged["model"]["objective"]["contrastive_weight"])
    assert weights == {"infonce": (0.0, 1.0), "distill": (1.0, 0.0), "combined": (1.0, 0.1), "cadet": (1.0, 0.1)}[
        method.stem]
    # the base's other objective settings survive the method's nested objective block
    assert merged["model"]["objective"]["teacher_temperature"] == yaml.safe_load(base_path.read_text())[
        "model"]["objective"]["teacher_temperature"]
    assert merged["trainer"]["default_root_dir"] == f"runs/{method.parent.name}/{method.stem}"


def test_gtr_projection_stacks_on_a_method(monkeypatch):
    """An option file, not a method: it adds the 256-d bottleneck to whichever objective precedes it."""
    monkeypatch.chdir(ROOT)
    r = "recipes/capretrieval-en"
    merged = resolve_fit_config(["--config", f"{r}/base.yaml", "--config", f"{r}/combined.yaml",
                                 "--config", f"{r}/gtr-projection.yaml"])
    assert merged["model"]["student"]["projection_dim"] == 256
    assert (merged["model"]["objective"]["kl_weight"], merged["model"]["objective"]["contrastive_weight"]) == (1.0, 0.1)
    assert merged["trainer"]["default_root_dir"] == "runs/capretrieval-en/gtr-projection"


def test_best_recipe_is_self_contained(monkeypatch):
    """best.yaml runs alone (`distill fit --config best.yaml`): every key a method's base sets is there,
    its lists are mined by the recipe it names, and it trains with CADET's options."""
    monkeypatch.chdir(ROOT)
    best = resolve_fit_config(["--config", "recipes/capretrieval-en/best.yaml"])
    base = resolve_fit_config(["--config", "recipes/capretrieval-en/base.yaml"])
    assert set(_flatten(best)) == set(_flatten(base))  # nothing a base would supply is missing
    mine = yaml.safe_load((ROOT / best["data"]["mine_config"]).read_text())
    assert mine["output"] == best["data"]["lists"] and mine["queries"]["passages"] == 3024
    objective, student = best["model"]["objective"], best["model"]["student"]
    assert (objective["kl_weight"], objective["contrastive_weight"]) == (1.0, 0.1)
    assert objective["teacher_normalization"] == "percentile" and student["dropout"] == 0.0
    assert best["model"]["optimizer"]["min_lr_ratio"] == 0.1 and best["early_stopping"]["patience"] == 2
    assert best["trainer"]["default_root_dir"] == "runs/capretrieval-en/best"
    assert best["export"]["fine_tuned_weight"] == 0.5  # WiSE-FT at the paper's untuned default


def test_chinese_best_recipe_trains_on_lists_carried_over_from_all_english_captions(monkeypatch):
    """recipes/capretrieval/best.yaml runs alone: its lists come from a transfer recipe whose source is
    the all-caption English keyword recipe, and it needs no teacher at training time."""
    monkeypatch.chdir(ROOT)
    best = resolve_fit_config(["--config", "recipes/capretrieval/best.yaml"])
    base = resolve_fit_config(["--config", "recipes/capretrieval/base.yaml"])
    assert set(_flatten(best)) <= set(_flatten(base)) | {"early_stopping.patience", "model.student.dropout",
                                                         "model.optimizer.min_lr_ratio"}
    assert set(_flatten(base)) <= set(_flatten(best))  # nothing a base would supply is missing
    transfer = yaml.safe_load((ROOT / best["data"]["mine_config"]).read_text())
    assert transfer["output"] == best["data"]["lists"] and transfer["corpus"] == "capretrieval"
    source = yaml.safe_load((ROOT / transfer["source"]).read_text())
    assert source["queries"]["passages"] == 3024 and source["corpus"] == "capretrieval-en"
    assert best["model"]["teacher"] is None and best["model"]["student"]["name"] == "multilingual-e5-small"
    # e5's cosines are compressed: the fixed 0.05 leaves its lists near uniform, so the scale is matched
    assert best["model"]["objective"]["student_temperature"] == "auto"
    assert best["trainer"]["default_root_dir"] == "runs/capretrieval/best"


def test_smoke_recipe_runs_as_shipped(monkeypatch):
    from distill.data.lists import load_lists
    from distill.models import resolve

    monkeypatch.chdir(ROOT)
    smoke = resolve_fit_config(["--config", "recipes/smoke.yaml"])
    assert "REPLACED" not in yaml.safe_dump(smoke)
    lists = load_lists(smoke["data"]["lists"])
    assert len(lists) == 16
    assert all(c["teacher_score"] is not None for row in lists for c in row["candidates"])  # no teacher needed
    assert smoke["model"]["teacher"] is None
    assert resolve(smoke["model"]["student"]["name"]).local  # the packaged student, no download
