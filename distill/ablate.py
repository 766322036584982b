"""`distill ablate`: named arms × seeds of a base fit recipe at equal budget → ablation.md / .json / .png.

An ablation config (``recipes/<dataset>/ablation.yaml``) names the base fit recipe(s), the budget every
arm shares (same lists, optimiser steps and schedule), the arms (each a few dotted-key overrides) and the
seeds. Each (arm, seed) is one ``distill fit`` subprocess in ``DIR/runs/<arm>/seed<k>/``: isolated, and a
kill of the ablation loses at most the running fit, which resumes from its ``last.ckpt`` next time. A run
is known by the hash of its resolved configuration (the fit's own parser, every default filled in) and of
the lists' content; a finished run with the same hash is reused, one with another hash is trained anew.

Every student is evaluated from its exported folder (``RUN/student``, fp32) on the config's sets, beside
the zero-shot base student and the teacher ceiling (rerank@depth over a per-set first stage), each
computed once and cached in ``DIR/baselines``. Δ and p are on nDCG@10: a paired randomisation test
(:func:`distill.compare.paired_randomization`) over per-query scores averaged over seeds.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.atomic import atomic_file, write_json_atomic
from distill.evaluation.metrics import METRICS

PRIMARY = "ndcg@10"
# Keys that define the budget: every arm trains under the same ones (set them under ``budget:``).
BUDGET_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.accumulate_grad_batches",
               "trainer.limit_train_batches", "data.batch_size", "data.max_lists", "model.optimizer.warmup_ratio")
# Keys the ablation itself sets per run.
RESERVED_KEYS = ("trainer.default_root_dir", "ckpt_path")


# ---- the config ------------------------------------------------------------------------------------

@dataclass
class AblationConfig:
    """``recipes/<dataset>/ablation.yaml``, validated where it is read.

    base: fit recipe(s), relative to the config file, merged in order (like several ``--config``).
    arms: arm name → {dotted fit key: value}; only what the arm names differs.
    seeds: the seeds every arm runs (an int n means 0..n-1); each sets every key in ``seed_keys``.
    budget: {dotted key: value} applied to every arm (optimiser steps, epochs, ...); arms may not override
        a budget key (BUDGET_KEYS).
    reference: the arm each other arm is compared with (Δ and p), e.g. the InfoNCE arm.
    datasets: evaluation set → the first stage the teacher reranks there (its ceiling).
    """

    path: Path
    base: list[Path]
    arms: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    seed_keys: list[str] = field(default_factory=lambda: ["seed_everything", "data.seed"])
    budget: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    teacher: str | None = None          # None: the base recipe's model.teacher.name
    depth: int = 50
    batch_size: int = 64
    output: Path | None = None
    keep_checkpoints: bool = False


def _key_lines(path: Path, text: str) -> dict[str, int]:
    """Dotted key → 1-based line, for error messages that name the line."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}{key.value}"
                lines[name] = key.start_mark.line + 1
                walk(value, name + ".")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ValueError(f"{path}:{mark.line + 1 if mark else '?'}: malformed YAML ({getattr(err, 'problem', err)})") from None
    return lines


def load_config(path: str | Path) -> AblationConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such ablation config") from None
    lines = _key_lines(path, text)
    raw = yaml.safe_load(text) or {}

    def fail(key: str, message: str) -> ValueError:
        return ValueError(f"{path}:{lines.get(key, 1)}: {key}: {message}")

    if not isinstance(raw, dict):
        raise ValueError(f"{path}:1: expected a mapping (base, arms, seeds, ...)")
    known = {"base", "arms", "seeds", "seed_keys", "budget", "reference", "evaluation", "output", "keep_checkpoints"}
    for key in raw:
        if key not in known:
            raise fail(key, f"unknown key (expected one of {', '.join(sorted(known))})")

    base = raw.get("base")
    base = [base] if isinstance(base, str) else base
    if not base or not all(isinstance(b, str) for b in base):
        raise fail("base", "expected a fit recipe path or a list of them (relative to this file)")
    base_paths = [(path.parent / b) for b in base]
    for b, p in zip(base, base_paths):
        if not p.is_file():
            raise fail("base", f"{b}: no such fit recipe (looked at {p})")

    def dotted(key: str, value) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise fail(key, "expected a mapping of dotted fit keys to values, e.g. model.objective.kl_weight: 0.0")
        for k, v in value.items():
            if isinstance(v, dict):
                raise fail(f"{key}.{k}", "write nested keys dotted (model.objective.kl_weight: 0.0), not as a mapping")
        return dict(value)

    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise fail("arms", "expected a mapping of arm name → overrides")
    arms = {}
    for name, overrides in arms_raw.items():
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(name)):
            raise fail(f"arms.{name}", "arm names are folder names: letters, digits, _ . + -")
        arms[str(name)] = dotted(f"arms.{name}", overrides)

    seeds = raw.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        seeds = list(range(seeds))
    elif not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
              and len(set(seeds)) == len(seeds)):
        raise fail("seeds", f"expected a positive count or a list of distinct integers, got {seeds!r}")
    seed_keys = raw.get("seed_keys", ["seed_everything", "data.seed"])
    if not isinstance(seed_keys, list) or not seed_keys or not all(isinstance(k, str) for k in seed_keys):
        raise fail("seed_keys", "expected a list of dotted fit keys")
    budget = dotted("budget", raw.get("budget"))

    for name, overrides in arms.items():
        for key in overrides:
            where = f"arms.{name}.{key}"
            if key in BUDGET_KEYS:
                raise fail(where, "part of the budget every arm shares; set it under budget:")
            if key in RESERVED_KEYS or key in seed_keys:
                raise fail(where, "set by the ablation for each run; an arm cannot override it")

    reference = raw.get("reference")
    if reference is not None and reference not in arms:
        raise fail("reference", f"{reference!r} is not an arm ({', '.join(arms)})")

    ev = raw.get("evaluation") or {}
    if not isinstance(ev, dict):
        raise fail("evaluation", "expected a mapping (datasets, teacher, depth, batch_size)")
    for key in ev:
        if key not in ("datasets", "teacher", "depth", "batch_size"):
            raise fail(f"evaluation.{key}", "unknown key (expected datasets, teacher, depth, batch_size)")
    datasets = ev.get("datasets") or {}
    if not isinstance(datasets, dict) or not datasets or not all(isinstance(v, str) for v in datasets.values()):
        raise fail("evaluation.datasets", "expected a mapping of evaluation set → the teacher's first stage there "
                                          "(e.g. capretrieval-en: multilingual-e5-small)")
    for key in ("depth", "batch_size"):
        value = ev.get(key, 50 if key == "depth" else 64)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise fail(f"evaluation.{key}", f"expected a positive integer, got {value!r}")
    keep = raw.get("keep_checkpoints", False)
    if not isinstance(keep, bool):
        raise fail("keep_checkpoints", f"expected true or false, got {keep!r}")
    return AblationConfig(
        path=path, base=base_paths, arms=arms, seeds=list(seeds), seed_keys=list(seed_keys), budget=budget,
        reference=reference, datasets={str(k): v for k, v in datasets.items()}, teacher=ev.get("teacher"),
        depth=ev.get("depth", 50), batch_size=ev.get("batch_size", 64),
        output=Path(raw["output"]) if raw.get("output") else None, keep_checkpoints=keep)


# ---- runs ------------------------------------------------------------------------------------------

@dataclass
class Run:
    arm: str
    seed: int
    dir: Path
    config: dict          # resolved (every default filled in), default_root_dir = dir
    hash: str

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"

    def done(self) -> dict | None:
        marker = _read_json(self.dir / "done.json")
        if marker and marker.get("hash") == self.hash and (self.dir / "student" / "modules.json").is_file():
            return marker
        return None


def _cli_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _overrides(pairs: dict[str, Any]) -> list[str]:
    return [f"--{k}={_cli_value(v)}" for k, v in pairs.items()]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def lists_fingerprint(lists: str | Path) -> str:
    """SHA-256 over the lists' bytes (a .jsonl file or every file of a saved dataset folder): runs on
    other lists are other runs, even at the same path."""
    lists = Path(lists)
    # `datasets` writes `cache-*.arrow` files of map/filter results into a saved dataset's folder when a
    # fit reads it: derived, not the lists, and they must not turn a finished run into an unknown one
    files = [lists] if lists.is_file() else sorted(
        p for p in lists.rglob("*") if p.is_file() and not (p.name.startswith("cache-") and p.suffix == ".arrow"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(lists) if f != lists else f.name).encode() + b"\0")
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# Settings that choose kernels, not results (fp32 losses and weights equal: tests/training/test_buckets.py):
# left out of the hash, so runs finished before such a setting existed are still found.
SPEED_ONLY = (("model", "attention"), ("model", "optimizer", "fused"))
# Settings added later whose default changes nothing: left out at that default, kept at any other value.
NEUTRAL_AT = {("export", "fine_tuned_weight"): 1.0}


def run_hash(config: dict, lists: str) -> str:
    hashed = json.loads(json.dumps(config, default=str))
    hashed.get("trainer", {}).pop("default_root_dir", None)  # where a run lives is not what it is
    hashed.pop("ckpt_path", None)
    for path in (*SPEED_ONLY, *NEUTRAL_AT):
        *parents, key = path
        node = hashed
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and (path in SPEED_ONLY or node[key] == NEUTRAL_AT[path]):
            del node[key]
    blob = json.dumps({"config": hashed, "lists": lists}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _ensure_lists(resolved: dict) -> str:
    """The lists' fingerprint, mining them first when missing (the fit would; the hash must not change)."""
    data = resolved.get("data") or {}
    lists = data.get("lists")
    if not lists:
        raise ValueError("the base recipe sets no data.lists")
    if not Path(lists).exists():
        if not data.get("mine_config"):
            raise FileNotFoundError(f"{lists}: no such lists; run `distill mine` or set data.mine_config")
        from distill.mining.recipe import run_recipe

        print(f"lists {lists} missing: mining them from {data['mine_config']}", flush=True)
        run_recipe(data["mine_config"], output=lists)
    return lists_fingerprint(lists)


def plan(cfg: AblationConfig, out: Path, arms: list[str] | None = None, seeds: list[int] | None = None) -> list[Run]:
    """Every (arm, seed) of the config (or of the chosen arms / seeds), resolved and hashed."""
    from distill.training.cli import resolve_fit_config

    base_args = [a for b in cfg.base for a in ("--config", str(b))] + _overrides(cfg.budget)
    fingerprints: dict[str, str] = {}
    runs = []
    for arm in arms or list(cfg.arms):
        for seed in seeds if seeds is not None else cfg.seeds:
            folder = out / "runs" / arm / f"seed{seed}"
            args = [*base_args, *_overrides(cfg.arms[arm]), *_overrides({k: seed for k in cfg.seed_keys}),
                    # the ablation evaluates the exported student itself (fp32, once); monitoring during
                    # training would cost minutes per run and never changes the selected checkpoint
                    "--evaluation.datasets=[]", f"--trainer.default_root_dir={folder}"]
            try:
                resolved = resolve_fit_config(args)
            except ValueError as err:
                raise ValueError(f"{cfg.path}: arms.{arm}: {err}") from None
            lists = str(resolved["data"]["lists"])
            if lists not in fingerprints:
                fingerprints[lists] = _ensure_lists(resolved)
            runs.append(Run(arm, seed, folder, resolved, run_hash(resolved, fingerprints[lists])))
    return runs


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress:
    """Turns the fit's ``distill-progress`` lines into 'arm, seed, step, time left' lines."""

    def __init__(self, run: Run, index: int, total_runs: int, runs_after: int):
        self.run, self.index, self.total_runs, self.runs_after = run, index, total_runs, runs_after
        self.first: tuple[int, float] | None = None
        self.last_step: int | None = None
        self.peak_rss_gb: float | None = None

    def line(self, text: str) -> str | None:
        from distill.training.callbacks import ProgressLines

        if not text.startswith(ProgressLines.PREFIX):
            return None
        fields = dict(part.split("=", 1) for part in text.split()[1:] if "=" in part)
        step, total, elapsed = int(fields["step"]), int(fields["total"]), float(fields["elapsed"])
        if self.first is None:
            self.first = (step, elapsed)
        self.last_step = step
        if "peak_rss_gb" in fields:  # a running peak: the latest line holds the fit's peak so far
            self.peak_rss_gb = float(fields["peak_rss_gb"])
        head = f"[{self.run.label} | run {self.index}/{self.total_runs}] step {step}/{total}, {_duration(elapsed)} elapsed"
        done, spent = step - self.first[0], elapsed - self.first[1]
        if done <= 0 or spent <= 0:
            return head
        per_step = spent / done
        left = (total - step) * per_step
        return (f"{head}, ~{_duration(left)} left in this run, "
                f"~{_duration(left + self.runs_after * total * per_step)} in all (training)")


def train(run: Run, fit_args: list[str], progress: _Progress, keep_checkpoints: bool) -> dict:
    """Fit one (arm, seed) in a subprocess, resuming its last checkpoint when it has one."""
    marker = _read_json(run.dir / "run.json")
    last = run.dir / "checkpoints" / "last.ckpt"
    resume = bool(marker and marker.get("hash") == run.hash and last.is_file())
    if not resume:
        if run.dir.exists():
            print(f"[{run.label}] configuration changed or run unfinished without a checkpoint: training anew", flush=True)
            shutil.rmtree(run.dir)
        run.dir.mkdir(parents=True)
        with atomic_file(run.dir / "config.yaml") as handle:
            handle.write(yaml.safe_dump(run.config, sort_keys=False))
        write_json_atomic(run.dir / "run.json", {"arm": run.arm, "seed": run.seed, "hash": run.hash})
    print(f"[{run.label}] {'resuming from ' + str(last) if resume else 'training'} → {run.dir}", flush=True)
    cmd = [sys.executable, "-m", "distill.cli", "fit", "--config", str(run.dir / "config.yaml"),
           "--trainer.enable_progress_bar=false", "--progress.every_n_seconds=15", "--progress.always=true", *fit_args,
           *(["--ckpt_path", "last"] if resume else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    log_path = run.dir / "fit.log"
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            for text in proc.stdout:
                log.write(text)
                shown = progress.line(text)
                if shown:
                    print(shown, flush=True)
            code = proc.wait()
        except BaseException:
            proc.kill()  # Ctrl-C: the fit stops too; its last.ckpt resumes it next time
            proc.wait()
            raise
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        why = f"killed by signal {-code}" if code < 0 else f"exit {code}: {tail[0][:200]}"
        raise RuntimeError(f"fit of {run.label} failed ({why}); log: {log_path}; rerun the same command to resume it")
    if not (run.dir / "student" / "modules.json").is_file():
        raise RuntimeError(f"fit of {run.label} ended without exporting {run.dir / 'student'}; log: {log_path}")
    marker = {"arm": run.arm, "seed": run.seed, "hash": run.hash, "seconds": round(time.monotonic() - start, 1),
              "steps": progress.last_step, "peak_rss_gb": progress.peak_rss_gb, "resumed": resume, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not keep_checkpoints:
        # the exported student is the result; a finished run's checkpoints (weights + optimiser state,
        # hundreds of MB each) are only needed to resume, which a finished run never does
        shutil.rmtree(run.dir / "checkpoints", ignore_errors=True)
    write_json_atomic(run.dir / "done.json", marker)
    return marker


# ---- evaluation ------------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "set"


def _cached_eval(path: Path, key: dict, what: str, **config) -> dict:
    """``distill evaluate`` (fp32) once per key; the report (with per-query scores) cached at ``path``."""
    cached = _read_json(path)
    if cached and cached.get("key") == key:
        return cached["report"]
    from distill.evaluation.evaluate import EvalConfig, evaluate

    print(f"evaluating {what}", flush=True)
    report = evaluate(EvalConfig(precision="fp32", show_progress=False, **config))
    out = report.to_json(per_query=True)
    write_json_atomic(path, {"key": key, "report": out})
    return out


def evaluate_run(run: Run, cfg: AblationConfig) -> dict[str, dict]:
    return {ds: _cached_eval(run.dir / "eval" / f"{_slug(ds)}.json", {"run": run.hash, "dataset": ds},
                             f"{run.label} on {ds}", model=str(run.dir / "student"), dataset=ds,
                             batch_size=cfg.batch_size)
            for ds in cfg.datasets}


def baselines(cfg: AblationConfig, out: Path, base: dict) -> dict[str, dict[str, dict]]:
    """Zero-shot base student and teacher ceiling on every set, each computed once (cached in out)."""
    student = base["model"]["student"]["name"]
    teacher = cfg.teacher or (base["model"].get("teacher") or {}).get("name")
    result: dict[str, dict[str, dict]] = {"zero-shot": {}, "teacher": {}}
    for ds, first_stage in cfg.datasets.items():
        result["zero-shot"][ds] = _cached_eval(
            out / "baselines" / f"zero-shot.{_slug(ds)}.json", {"model": student, "dataset": ds},
            f"zero-shot {student} on {ds}", model=student, dataset=ds, batch_size=cfg.batch_size)
        if teacher:
            key = {"first_stage": first_stage, "teacher": teacher, "depth": cfg.depth, "dataset": ds}
            result["teacher"][ds] = _cached_eval(
                out / "baselines" / f"teacher.{_slug(ds)}.json", key,
                f"teacher {teacher} over {first_stage} (rerank@{cfg.depth}) on {ds}",
                model=first_stage, dataset=ds, rerank=teacher, depth=cfg.depth, batch_size=cfg.batch_size)
    return result


# ---- the report ------------------------------------------------------------------------------------

def _mean_per_query(reports: list[dict], metric: str) -> dict[str, float]:
    shared = set.intersection(*(set(r["per_query"]) for r in reports))
    return {q: statistics.fmean(r["per_query"][q][metric] for r in reports) for q in sorted(shared)}


def _paired_p(a: dict[str, float], b: dict[str, float]) -> float | None:
    from distill.compare import paired_randomization

    shared = sorted(set(a) & set(b))
    return paired_randomization([a[q] for q in shared], [b[q] for q in shared]) if shared else None


def summarize(cfg: AblationConfig, finished: dict[str, dict[int, dict]], evals: dict[str, dict[int, dict]],
              base_reports: dict[str, dict[str, dict]], base: dict) -> dict:
    """Everything ablation.json holds: per arm, per set, mean ± std over seeds, Δ and p, per seed, per query."""
    arms_out = {}
    for arm, overrides in cfg.arms.items():
        seeds = sorted(evals.get(arm, {}))
        entry: dict[str, Any] = {"overrides": overrides, "seeds": seeds,
                                 "runs": {str(s): {**finished[arm][s], "evaluation": evals[arm][s]} for s in seeds},
                                 "datasets": {}}
        for ds in cfg.datasets:
            reports = [evals[arm][s][ds] for s in seeds]
            if not reports:
                continue
            stats = {}
            for m in METRICS:
                values = [r[m] for r in reports]
                stats[m] = {"mean": statistics.fmean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}
            per_query = _mean_per_query(reports, PRIMARY)
            zero = base_reports["zero-shot"][ds]
            row = {"metrics": stats, "per_query_mean": per_query,
                   "delta_zero_shot": stats[PRIMARY]["mean"] - zero[PRIMARY],
                   "p_zero_shot": _paired_p({q: s[PRIMARY] for q, s in zero["per_query"].items()}, per_query)}
            types = sorted({t for r in reports for t in r.get("by_type", {})})
            if types:
                row["by_type"] = {t: statistics.fmean(r["by_type"][t][PRIMARY] for r in reports if t in r.get("by_type", {}))
                                  for t in types}
            entry["datasets"][ds] = row
        arms_out[arm] = entry
    ref = cfg.reference
    for arm, entry in arms_out.items():
        for ds, row in entry["datasets"].items():
            ref_row = arms_out.get(ref, {}).get("datasets", {}).get(ds) if ref else None
            if ref_row is not None and arm != ref:
                row["delta_reference"] = row["metrics"][PRIMARY]["mean"] - ref_row["metrics"][PRIMARY]["mean"]
                row["p_reference"] = _paired_p(ref_row["per_query_mean"], row["per_query_mean"])
    return {
        "config": str(cfg.path), "base": [str(b) for b in cfg.base], "budget": cfg.budget, "seeds": cfg.seeds,
        "seed_keys": cfg.seed_keys, "reference": ref, "primary_metric": PRIMARY,
        "student": base["model"]["student"]["name"], "datasets": cfg.datasets,
        "teacher": {"name": cfg.teacher or (base["model"].get("teacher") or {}).get("name"), "depth": cfg.depth},
        "baselines": base_reports, "arms": arms_out,
    }


def _fmt_p(p: float | None) -> str:
    return "" if p is None else f"{p:.4f}"


def markdown(summary: dict) -> str:
    ref, seeds = summary["reference"], summary["seeds"]
    budget = ", ".join(f"`{k}: {v}`" for k, v in summary["budget"].items()) or "as in the base recipe"
    lines = [f"# Ablation: `{summary['config']}`", "",
             f"Base recipe: {', '.join('`' + b + '`' for b in summary['base'])}; budget for every arm: {budget}; "
             f"seeds {', '.join(map(str, seeds))} (each sets {', '.join('`' + k + '`' for k in summary['seed_keys'])}).",
             f"Every student evaluated from its exported folder (fp32). Δ and p on {PRIMARY}: two-sided paired "
             "randomisation test over per-query scores averaged over seeds"
             + (f"; the reference arm is `{ref}`." if ref else ".")]
    teacher = summary["teacher"]
    for ds, first_stage in summary["datasets"].items():
        zero, top = summary["baselines"]["zero-shot"][ds], summary["baselines"]["teacher"].get(ds)
        head = ["arm", "seeds", "nDCG@10", "Recall@100", "MRR@10", "Δ zero-shot", "p"]
        if ref:
            head += [f"Δ {ref}", "p"]
        lines += ["", f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def fixed(name: str, report: dict) -> str:
            cells = [name, "", *(f"{100 * report[m]:.2f}" for m in METRICS),
                     f"{100 * (report[PRIMARY] - zero[PRIMARY]):+.2f}" if report is not zero else "", ""]
            return "| " + " | ".join(cells + ([""] * 2 if ref else [])) + " |"

        lines.append(fixed(f"zero-shot ({summary['student']})", zero))
        for arm, entry in summary["arms"].items():
            row = entry["datasets"].get(ds)
            if row is None:
                continue
            st = row["metrics"]
            cells = [arm, f"{len(entry['seeds'])}/{len(seeds)}",
                     # one seed has no spread to show (0.00 would claim one)
                     *(f"{100 * st[m]['mean']:.2f}" + (f" ± {100 * st[m]['std']:.2f}" if len(entry["seeds"]) > 1 else "")
                       for m in METRICS),
                     f"{100 * row['delta_zero_shot']:+.2f}", _fmt_p(row["p_zero_shot"])]
            if ref:
                cells += ([f"{100 * row['delta_reference']:+.2f}", _fmt_p(row["p_reference"])]
                          if "delta_reference" in row else ["", ""])
            lines.append("| " + " | ".join(cells) + " |")
        if top:
            lines.append(fixed(f"teacher ceiling ({teacher['name']} over {first_stage}, rerank@{teacher['depth']})", top))
        types = sorted(zero.get("by_type", {}))
        arms = [a for a, e in summary["arms"].items() if "by_type" in e["datasets"].get(ds, {})]
        if types and arms:
            cols = ["zero-shot", *arms] + (["teacher"] if top else [])
            lines += ["", f"{PRIMARY} by query type:", "", "| type | queries | " + " | ".join(cols) + " |",
                      "|" + "---|" * (len(cols) + 2)]
            for t in types:
                values = [zero["by_type"][t][PRIMARY],
                          *(summary["arms"][a]["datasets"][ds]["by_type"].get(t, float("nan")) for a in arms)]
                if top:
                    values.append(top.get("by_type", {}).get(t, {}).get(PRIMARY, float("nan")))
                lines.append(f"| {t} | {zero['by_type'][t]['num_queries']} | "
                             + " | ".join(f"{100 * v:.2f}" for v in values) + " |")
    times = {a: [r["seconds"] for r in e["runs"].values() if r.get("seconds") is not None]
             for a, e in summary["arms"].items()}
    if any(times.values()):
        lines += ["", "Training time per run (this machine): "
                  + ", ".join(f"{a} {_duration(statistics.fmean(t))}" for a, t in times.items() if t) + "."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Bars (mean nDCG@10 over seeds) with the per-seed points; zero-shot and teacher ceiling as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(summary["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(4.5, 1.6 * len(summary["arms"]) + 2) * len(datasets), 4.2),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        arms = [a for a, e in summary["arms"].items() if ds in e["datasets"]]
        means = [100 * summary["arms"][a]["datasets"][ds]["metrics"][PRIMARY]["mean"] for a in arms]
        ax.bar(range(len(arms)), means, color="#8fb3d9", width=0.6, zorder=1)
        points = []
        for i, a in enumerate(arms):
            values = [100 * v for v in summary["arms"][a]["datasets"][ds]["metrics"][PRIMARY]["per_seed"]]
            offsets = [(k - (len(values) - 1) / 2) * 0.08 for k in range(len(values))]
            ax.scatter([i + o for o in offsets], values, color="#1f3f66", s=18, zorder=3)
            points += values
        zero = 100 * summary["baselines"]["zero-shot"][ds][PRIMARY]
        ax.axhline(zero, color="#777777", linestyle="--", label=f"zero-shot {zero:.2f}", zorder=2)
        levels = [zero, *points]
        top = summary["baselines"]["teacher"].get(ds)
        if top:
            ceiling = 100 * top[PRIMARY]
            ax.axhline(ceiling, color="#b03a2e", linestyle=":", label=f"teacher ceiling {ceiling:.2f}", zorder=2)
            levels.append(ceiling)
        low, high = min(levels), max(levels)
        pad = max(1.0, 0.15 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
        ax.set_xticks(range(len(arms)), arms, rotation=15)
        ax.set_ylabel("nDCG@10")
        ax.set_title(ds)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, dpi=120, format="png")
    plt.close(fig)


# ---- the orchestrator ------------------------------------------------------------------------------

def run_ablation(config: str | Path, output: str | Path | None = None, arms: list[str] | None = None,
                 seeds: list[int] | None = None, fit_args: list[str] | None = None) -> Path:
    """Train what is missing (arms × seeds, or the chosen part), evaluate, and write the three files over
    every finished run of the config. Returns the output folder."""
    from distill.training.cli import resolve_fit_config

    cfg = load_config(config)
    for arm in arms or []:
        if arm not in cfg.arms:
            raise ValueError(f"--arms: {arm!r} is not an arm of {cfg.path} ({', '.join(cfg.arms)})")
    for seed in seeds or []:
        if seed not in cfg.seeds:
            raise ValueError(f"--seeds: {seed} is not among {cfg.path}'s seeds ({', '.join(map(str, cfg.seeds))})")
    out = Path(output) if output else cfg.output or Path("runs/ablation") / cfg.path.parent.name
    out.mkdir(parents=True, exist_ok=True)

    chosen = plan(cfg, out, arms, seeds)
    todo = [r for r in chosen if r.done() is None]
    print(f"ablation {cfg.path} → {out}: {len(chosen)} runs chosen, {len(chosen) - len(todo)} finished (reused), "
          f"{len(todo)} to train", flush=True)
    # before a run's own progress lines arrive: an estimate from the runs already finished
    seconds = [m["seconds"] for m in (r.done() for r in chosen) if m and m.get("seconds")]
    for i, run in enumerate(todo, 1):
        if seconds:
            per_run = statistics.fmean(seconds)
            print(f"[{run.label} | run {i}/{len(todo)}] ~{_duration(per_run)} a run so far: "
                  f"~{_duration(per_run * (len(todo) - i + 1))} of training left", flush=True)
        marker = train(run, list(fit_args or []), _Progress(run, i, len(todo), len(todo) - i), cfg.keep_checkpoints)
        if not marker["resumed"]:
            seconds.append(marker["seconds"])
        evaluate_run(run, cfg)

    # the report covers every finished run of the config, not only this invocation's part
    everything = plan(cfg, out) if (arms or seeds) else chosen
    finished: dict[str, dict[int, dict]] = {}
    evals: dict[str, dict[int, dict]] = {}
    for run in everything:
        marker = run.done()
        if marker is None:
            continue
        finished.setdefault(run.arm, {})[run.seed] = marker
        evals.setdefault(run.arm, {})[run.seed] = evaluate_run(run, cfg)
    if not finished:
        raise RuntimeError(f"{out}: no finished run to report")
    base = resolve_fit_config([a for b in cfg.base for a in ("--config", str(b))] + _overrides(cfg.budget))
    summary = summarize(cfg, finished, evals, baselines(cfg, out, base), base)
    write_json_atomic(out / "ablation.json", summary)
    with atomic_file(out / "ablation.md") as handle:
        handle.write(markdown(summary))
    plot(summary, out / "ablation.png")
    missing = len(everything) - sum(len(v) for v in finished.values())
    print(markdown(summary))
    print(f"wrote {out / 'ablation.md'}, {out / 'ablation.json'}, {out / 'ablation.png'}"
          + (f" ({missing} of {len(everything)} runs still to train)" if missing else ""), flush=True)
    return out
