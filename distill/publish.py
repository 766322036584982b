"""`distill publish`: a finished run → a sentence-transformers folder with a model card (+ hub upload).

The folder is the run's exported student (``RUN_DIR/student``, written by ``ExportStudent``), which
``SentenceTransformer(DIR)`` loads with nothing else; its prompts make ``encode_query`` /
``encode_document`` add the student's prefixes. The card is sentence-transformers' own
(``SentenceTransformerModelCardData`` → model details, usage, architecture), with the hub's
``model-index`` in its front matter and this project's sections appended: teacher, objective,
training lists, the resolved recipe verbatim, evaluation tables, reproduce command, limits (citations go into the template's own section).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill.atomic import atomic_folder

METRICS = (("ndcg@10", "nDCG@10"), ("recall@100", "Recall@100"), ("mrr@10", "MRR@10"))
# a report row named this is the published model's own result (it goes into model-index)
OWN = "student"

# rendered by sentence-transformers' card template under Citation → BibTeX
CITATIONS = {
    "Listwise distillation (CADET)": """\
@article{tamber2025cadet,
  title   = {Conventional Contrastive Learning Often Falls Short: Improving Dense Retrieval with
             Cross-Encoder Listwise Distillation and Synthetic Data},
  author  = {Tamber, Manveer Singh and Kazi, Suleman and Sourabh, Vivek and Lin, Jimmy},
  journal = {arXiv preprint arXiv:2505.19274},
  year    = {2025}
}""",
    "CapRetrieval": """\
@article{xu2025capretrieval,
  title   = {Dense Retrievers Can Fail on Simple Queries: Revealing The Granularity Dilemma of Embeddings},
  author  = {Xu, Liyan and Su, Zhenlin and Yu, Mo and Li, Jiangnan and Meng, Fandong and Zhou, Jie},
  journal = {arXiv preprint arXiv:2506.08592},
  year    = {2025}
}""",
    "GTR": """\
@article{ni2021gtr,
  title   = {Large Dual Encoders Are Generalizable Retrievers},
  author  = {Ni, Jianmo and Qu, Chen and Lu, Jing and Dai, Zhuyun and Hern{\\'a}ndez {\\'A}brego, Gustavo and
             Ma, Ji and Zhao, Vincent Y. and Luan, Yi and Hall, Keith B. and Chang, Ming-Wei and Yang, Yinfei},
  journal = {arXiv preprint arXiv:2112.07899},
  year    = {2021}
}""",
    "Sentence Transformers": """\
@inproceedings{reimers2019sbert,
  title     = {Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks},
  author    = {Reimers, Nils and Gurevych, Iryna},
  booktitle = {Proceedings of EMNLP-IJCNLP},
  year      = {2019}
}""",
}


@dataclass
class Run:
    """What a finished `distill fit` run folder holds."""

    folder: Path
    student: Path                      # the sentence-transformers export
    recipe_file: Path                  # config.yaml as LightningCLI resolved it
    recipe_text: str
    recipe: dict
    metrics: dict                      # student/metrics.json (selected checkpoint, evaluation reports)
    reports: dict[str, dict[str, dict]] = field(default_factory=dict)  # row name → data set → report


def read_run(run_dir: str | Path, extra_reports: list[str] = ()) -> Run:
    """Read ``RUN_DIR`` (config.yaml, student/, student/metrics.json) and ``NAME=path.json`` reports."""
    import yaml

    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such run folder")
    student = folder / "student"
    if not (student / "modules.json").is_file():
        raise FileNotFoundError(f"{student}: no exported student (a `distill fit` run writes it when it ends)")
    config = _recipe_file(folder)
    text = config.read_text(encoding="utf-8")
    try:
        recipe = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{config}: not valid YAML ({str(err).splitlines()[0]})") from None
    metrics_path = student / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    run = Run(folder, student, config, text, recipe, metrics)
    for name, report in (metrics.get("evaluation") or {}).items():
        run.reports.setdefault(OWN, {})[report.get("dataset", name)] = report
    for spec in extra_reports:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--report expects NAME=path.json (e.g. zero-shot=base.json), got {spec!r}")
        report = _read_json(Path(path))
        for key in ("dataset", *(m for m, _ in METRICS)):
            if key not in report:
                raise ValueError(f"{path}: field {key!r} missing (expected a `distill evaluate --output` report)")
        run.reports.setdefault(name, {})[report["dataset"]] = report
    return run


def _recipe_file(folder: Path) -> Path:
    """The resolved recipe LightningCLI saved: ``config.yaml`` in the run folder, or in the logger's
    folder (``lightning_logs/version_N/``, the latest run) when a logger is on."""
    if (folder / "config.yaml").is_file():
        return folder / "config.yaml"
    versions = [p for p in folder.glob("*/version_*/config.yaml") if p.parent.name[8:].isdigit()]
    if not versions:
        raise FileNotFoundError(f"{folder}: no config.yaml (LightningCLI writes the resolved recipe into the run folder)")
    return max(versions, key=lambda p: (p.stat().st_mtime, int(p.parent.name[8:])))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def publish(run_dir: str | Path, output: str | Path, *, repo_id: str | None = None, push: bool = False,
            private: bool = False, reports: list[str] = (), license: str = "apache-2.0") -> Path:
    """Write ``output`` (replaced atomically), then push it or print what a push would upload."""
    if push and not repo_id:
        raise ValueError("--push needs --repo-id ORG/NAME")
    run = read_run(run_dir, list(reports))
    output = Path(output).expanduser().resolve()
    with atomic_folder(output) as tmp:
        # metrics.json is the run's bookkeeping; its numbers are in the card
        shutil.copytree(run.student, tmp, ignore=shutil.ignore_patterns("metrics.json"), dirs_exist_ok=True)
        (tmp / "README.md").write_text(model_card(run, tmp, repo_id=repo_id, license=license), encoding="utf-8")
    print(f"wrote {output}")
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    if push:
        upload(output, repo_id, private)
    else:
        size = sum((output / f).stat().st_size for f in files)
        target = repo_id or "<--repo-id ORG/NAME>"
        print(f"would upload {len(files)} files ({size / 1e6:.1f} MB) to {target}"
              f"{' (private)' if private else ''}; add --push to upload:")
        print("\n".join(f"  {f}" for f in files))
    return output


def upload(folder: Path, repo_id: str | None, private: bool) -> str:
    """Create the model repository (if missing) and upload ``folder``; one-line errors."""
    if not repo_id:
        raise ValueError("--push needs --repo-id ORG/NAME")
    from huggingface_hub import HfApi, constants

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="distill publish")
    except Exception as err:  # network, auth, hub errors: one line, and the folder is already written
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RuntimeError(f"push to {constants.ENDPOINT} failed ({type(err).__name__}: {detail}); "
                           f"{folder} is written, upload it later with "
                           f"`hf upload {repo_id} {folder}`") from None
    url = getattr(info, "commit_url", None) or f"{constants.ENDPOINT}/{repo_id}"
    print(f"pushed {folder} to {repo_id}: {url}")
    return url


# ---- the model card --------------------------------------------------------------------------

def model_card(run: Run, folder: Path, repo_id: str | None = None, license: str = "apache-2.0") -> str:
    """README.md: sentence-transformers' card for ``folder`` + model-index + this run's sections."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import EvalResult, eval_results_to_model_index
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
    from sentence_transformers.base.model_card import generate_model_card

    from distill.models import known

    model_cfg = run.recipe.get("model") or {}
    student_cfg = model_cfg.get("student") or {}
    teacher_cfg = model_cfg.get("teacher") or {}
    base = str(student_cfg.get("name", ""))
    base_id = known(base).hub_id if known(base) else None
    teacher = teacher_cfg.get("name") if teacher_cfg else None
    teacher_id = known(teacher).hub_id if teacher and known(teacher) else teacher
    stats = _list_stats(run)
    name = repo_id.split("/")[-1] if repo_id else f"{Path(base).name or 'student'} distilled"
    datasets = sorted(run.reports.get(OWN, {}))
    languages = sorted({_language(d) for d in datasets} - {None}) or ["en"]

    card_data = SentenceTransformerModelCardData(
        language=languages, license=license, model_name=name, model_id=repo_id, local_files_only=True,
        tags=["listwise-distillation", "knowledge-distillation", "dense-retrieval"],
        generate_widget_examples=False,
    )
    card_data.citations = dict(CITATIONS)
    card_data.base_model = base_id  # a hub id only: a local path would be a broken link
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True, model_card_data=card_data)
    card = ModelCard(generate_model_card(model))

    results = [
        EvalResult(task_type="retrieval", dataset_type=dataset, dataset_name=dataset, dataset_split=report.get("split"),
                   metric_type=key, metric_name=label, metric_value=round(float(report[key]), 4))
        for dataset, report in sorted(run.reports.get(OWN, {}).items()) for key, label in METRICS
    ]
    if results:
        card.data["model-index"] = eval_results_to_model_index(name, results)
        card.data["metrics"] = [key for key, _ in METRICS]
    card.data["datasets"] = [stats["corpus"]] if stats.get("corpus") else None
    card.data["tags"] = sorted(set(card.data.get("tags") or []) | {"sentence-transformers", "sentence-similarity"})
    sections = [
        _training_section(model_cfg, base, base_id, teacher, teacher_id, stats, model),
        _evaluation_section(run),
        "## Training recipe\n\nThe resolved recipe (`config.yaml`, as LightningCLI wrote it), verbatim:\n\n"
        f"```yaml\n{run.recipe_text.rstrip()}\n```",
        _reproduce_section(run),
        _limits_section(model, teacher, languages),
    ]
    return f"{card.content.rstrip()}\n\n" + "\n\n".join(sections) + "\n"


def _language(dataset: str) -> str | None:
    from distill.data.corpora import LANGUAGES

    return LANGUAGES.get(dataset)


def _list_stats(run: Run) -> dict:
    """The training lists' ``stats.json`` (written by `distill mine`) with ``path`` added; ``{"path": …}``
    alone when the lists are not at hand."""
    lists = (run.recipe.get("data") or {}).get("lists")
    if not lists:
        return {}
    candidates = [Path(lists)] if Path(lists).is_absolute() else [Path.cwd() / lists, run.folder / lists]
    for folder in candidates:
        if (folder / "stats.json").is_file():
            stats = _read_json(folder / "stats.json")
            return {**stats, "path": str(lists), "corpus": (stats.get("config") or {}).get("corpus")}
    return {"path": str(lists)}


def _training_section(model_cfg: dict, base: str, base_id: str | None, teacher: str | None,
                      teacher_id: str | None, stats: dict, model) -> str:
    objective = model_cfg.get("objective") or {}
    student_cfg = model_cfg.get("student") or {}
    lines = ["## Distillation", ""]
    lines.append(f"- **Student (base model):** {f'[{base_id}](https://huggingface.co/{base_id})' if base_id else base}")
    if teacher:
        link = f"[{teacher_id}](https://huggingface.co/{teacher_id})" if teacher_id and "/" in teacher_id else teacher
        lines.append(f"- **Teacher (frozen cross-encoder):** {link}")
    if student_cfg.get("projection_dim"):
        lines.append(f"- **Projection bottleneck:** bias-free linear layer to {student_cfg['projection_dim']} "
                     "dimensions before normalisation (GTR-style), the `Dense` module")
    if objective:
        lines += [
            "- **Objective:** `kl_weight · listwise KL(teacher ‖ student) + contrastive_weight · InfoNCE` "
            "(CADET listwise distillation, Tamber et al. 2025)",
            "",
            "| term | weight | temperature |", "|---|---|---|",
            f"| listwise KL | {objective.get('kl_weight')} | student {objective.get('student_temperature')}, "
            f"teacher {objective.get('teacher_temperature')} (teacher scores: {objective.get('teacher_normalization')}) |",
            f"| InfoNCE | {objective.get('contrastive_weight')} | {objective.get('contrastive_temperature')} "
            f"(false-negative ratio {objective.get('false_negative_ratio')}) |",
        ]
    lines += ["", "### Training lists", "", f"- **Lists:** `{stats.get('path', 'unknown')}`"]
    if "lists" not in stats:
        lines.append("- (their `stats.json`, written by `distill mine`, was not found beside the run)")
    else:
        config = stats.get("config") or {}
        lines.append(f"- **Corpus:** {stats.get('corpus')}")
        lines.append(f"- **Lists:** {stats['lists']}, {stats.get('candidates_per_list', 0):.1f} candidates each")
        if config.get("filter") or stats.get("filtered"):
            lines.append(f"- **Filter:** {json.dumps(config.get('filter'))}; dropped {json.dumps(stats.get('filtered'))}")
        if stats.get("query_types"):
            lines += ["", "| query type | lists |", "|---|---|"]
            lines += [f"| {t} | {n} |" for t, n in sorted(stats["query_types"].items())]
    return "\n".join(lines)


def _evaluation_section(run: Run) -> str:
    if not run.reports:
        return "## Evaluation\n\nNo evaluation reports in the run (set `evaluation.datasets` in the recipe)."
    rows = [OWN, *sorted(n for n in run.reports if n != OWN)]
    datasets = sorted({d for reports in run.reports.values() for d in reports})
    lines = ["## Evaluation", "",
             "Full-corpus retrieval (`distill evaluate`), scores × 100. `student` is this model; other rows are "
             "the reports given to `distill publish --report NAME=report.json` (e.g. the zero-shot base and the "
             "teacher reranking the base's top 50: the ceiling).", ""]
    for dataset in datasets:
        lines += [f"### {dataset}", "", "| model | " + " | ".join(label for _, label in METRICS) + " | queries |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for row in rows:
            report = run.reports.get(row, {}).get(dataset)
            if report:
                values = " | ".join(f"{100 * report[key]:.2f}" for key, _ in METRICS)
                lines.append(f"| {'**' + row + '**' if row == OWN else row} | {values} | {report.get('num_queries', '')} |")
        by_type = {row: run.reports[row][dataset].get("by_type") for row in rows
                   if dataset in run.reports.get(row, {}) and run.reports[row][dataset].get("by_type")}
        if by_type:
            types = sorted({t for per in by_type.values() for t in per})
            lines += ["", "nDCG@10 per query type:", "", "| query type | " + " | ".join(by_type) + " |",
                      "|---|" + "---|" * len(by_type)]
            for t in types:
                cells = [f"{100 * per[t]['ndcg@10']:.2f}" if t in per else "" for per in by_type.values()]
                lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _reproduce_section(run: Run) -> str:
    data = run.recipe.get("data") or {}
    steps = []
    if data.get("mine_config"):
        steps.append(f"distill mine --config {data['mine_config']}")
    steps.append(f"distill fit --config {run.recipe_file}")
    datasets = sorted(run.reports.get(OWN, {}))
    for dataset in datasets:
        steps.append(f"distill evaluate --model {run.folder / 'student'} --dataset {dataset}")
    steps.append(f"distill publish {run.folder} --output <DIR>")
    return ("## Reproduce\n\nWith [listwise-distill](https://github.com/) installed, from the folder the run "
            "was started in:\n\n```bash\n" + "\n".join(steps) + "\n```")


def _limits_section(model, teacher: str | None, languages: list[str]) -> str:
    transformer = model[0]
    q_len, d_len = getattr(transformer, "query_length", None), getattr(transformer, "document_length", None)
    lines = ["## Limits", ""]
    lines.append("- Use `model.encode_query(...)` for queries and `model.encode_document(...)` for passages: they "
                 "add the query / passage prefixes the student was trained with (the folder's `prompts`).")
    if q_len or d_len:
        lines.append(f"- Trained with queries cut at {q_len} tokens and passages at {d_len}. sentence-transformers "
                     ">= 6 applies these through `encode_query` / `encode_document`; with `model.encode(...)` or an "
                     f"older release set `model.max_seq_length = {q_len}` for queries and {d_len} for passages.")
    if teacher:
        lines.append(f"- The teacher ({teacher}) bounds what the student learns: its ranking errors are distilled "
                     "too; an English-only teacher gives no signal on other languages.")
    lines.append(f"- Evaluated on {', '.join(languages)} data only; other domains and languages are untested.")
    lines.append("- Needs sentence-transformers >= 6 to load (the folder is its `save` format).")
    return "\n".join(lines)
