"""``python -m disco_bench``: run suites, or any single step, from the command line.

Bad input ends in one line ``error: ...`` on stderr and exit code 2; a suite with a failed step
exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from pretrain.errors import InputError, one_line


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (and the choices), exit 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        raise SystemExit(2)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. --set epochs=2 distill_reduction=mean (suites: pretrain.epochs=2)")


def build_parser() -> argparse.ArgumentParser:
    from disco_bench.suite import available_suites
    from downstream.registry import TASKS
    from pretrain.methods import METHODS

    parser = OneLineParser(prog="disco-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("run", help="run a suite of steps (skips finished steps)")
    p.add_argument("--suite", required=True, metavar="NAME|FILE.yaml",
                   help=f"a suite name ({', '.join(available_suites())}) or a suite YAML file")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--data-root", default=None, help="folder holding the suite's datasets (default: generate embedded ones)")
    p.add_argument("--dry-run", action="store_true",
                   help="list every step, what it needs and produces, and its GPU-hours estimate; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="run the steps whose id or tag matches (shell-style: 'linear-*', 'table3'), plus their dependencies")
    p.add_argument("--retry", type=int, default=0, metavar="N", help="run a failed step up to N more times")
    p.add_argument("--launcher", choices=["local", "torchrun", "slurm"], default="local",
                   help="local: this process; torchrun: --nproc processes per step; slurm: one submitit job per step")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per distributed step (torchrun, slurm)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="local: run up to N independent steps at once, each in its own process with "
                        "cores/N threads (and its own GPU when there are N); default 1")
    p.add_argument("--launcher-opt", nargs="+", default=[], metavar="KEY=VALUE",
                   help="submitit parameters, e.g. slurm_partition=gpu timeout_min=2880 (cluster=local: no SLURM)")
    _add_set(p)

    p = sub.add_parser("step", help="run one step of a suite alone (what the torchrun and slurm launchers call)")
    p.add_argument("--suite", required=True, help="suite name or file")
    p.add_argument("--step", required=True, help="step id")
    p.add_argument("--out", default="results")
    p.add_argument("--data-root", default=None)
    p.add_argument("--records", default=None, help="write the step's records here (JSON) instead of OUT/results.jsonl")
    p.add_argument("--retry", type=int, default=0, metavar="N")
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("pretrain", help="pre-train one student or teacher")
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--student", required=True, help="timm model name (e.g. efficientnet_b0, resnet18)")
    p.add_argument("--teacher", default=None, help="teacher architecture, when the checkpoint does not name it")
    p.add_argument("--teacher-ckpt", default=None)
    p.add_argument("--data", required=True, help="ImageFolder root holding train/")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a downstream task")
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--ckpt", required=True, action="append",
                   help="checkpoint to evaluate; tsne and mi take several (--ckpt A --ckpt B), compared side by side")
    p.add_argument("--classes", type=int, default=None, help="tsne: how many classes of val/ (default 10)")
    p.add_argument("--per-class", type=int, default=None, help="tsne: images per class (default 50)")
    p.add_argument("--data", required=True)
    p.add_argument("--protocol", choices=["paper", "fast"], default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None,
                   help="detection: train and test at this short side instead of the paper's 400-800 / 800")
    p.add_argument("--dataset", choices=["voc", "coco"], default=None, help="detection: VOC (Faster R-CNN) or COCO (Mask R-CNN)")
    p.add_argument("--backend", choices=["torchvision", "detectron2"], default=None, help="detection: engine (default torchvision)")
    p.add_argument("--trials", type=int, default=None, help="detection: fine-tune N times, record mean and std (paper VOC: 5)")
    p.add_argument("--max-iter", type=int, default=None, help="detection: shorten the paper schedule to N iterations")
    p.add_argument("--out", default="results", help="records go to OUT/results.jsonl")
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("convert", help="convert a checkpoint's backbone for another framework")
    p.add_argument("--to", required=True, choices=["detectron2"])
    p.add_argument("ckpt", help="student or teacher checkpoint (ResNet backbone)")
    p.add_argument("output", help="output file (.pkl for detectron2)")

    p = sub.add_parser("report", help="regenerate LEADERBOARD.md from OUT/results.jsonl")
    p.add_argument("--out", default="results")

    p = sub.add_parser("data", help="datasets: generate the embedded one")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    q = data_sub.add_parser("make", help="write the embedded ImageFolder dataset")
    q.add_argument("--out", required=True)
    _add_set(q)

    p = sub.add_parser("list", help="list methods, tasks, suites and the paper's models")
    p.add_argument("what", nargs="?", choices=["methods", "tasks", "suites", "models"], default=None)
    return parser


def cmd_run(args) -> int:
    from disco_bench.config import parse_overrides
    from disco_bench.launchers import make_launcher
    from disco_bench.runner import run_suite
    from disco_bench.suite import load_suite

    if args.retry < 0:
        raise InputError(f"--retry {args.retry}: expected 0 or more")
    suite = load_suite(args.suite)
    data_root = Path(args.data_root) if args.data_root else None
    launcher = None
    if not args.dry_run:
        launcher = make_launcher(args.launcher, Path(args.out), args.nproc, args.retry, parse_overrides(args.launcher_opt),
                                 jobs=args.jobs)
    return run_suite(suite, Path(args.out), data_root, parse_overrides(args.overrides), dry_run=args.dry_run,
                     progress=not args.quiet, only=args.only, retries=args.retry, launcher=launcher)


def cmd_step(args) -> int:
    from disco_bench import results
    from disco_bench.config import parse_overrides
    from disco_bench.launchers import StepRequest
    from disco_bench.runner import run_request
    from pretrain.checkpoint import atomic_write_text

    request = StepRequest(suite=args.suite, step=args.step, out=args.out, data_root=args.data_root,
                          overrides=parse_overrides(args.overrides), retries=args.retry, progress=not args.quiet)
    records = run_request(request)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 hands records back
    if args.records:
        atomic_write_text(args.records, json.dumps(records))
    else:
        results.append_records(Path(args.out) / "results.jsonl", records)
    print(f"{args.step}: {len(records)} records")
    return 0


def cmd_pretrain(args) -> int:
    from disco_bench.config import parse_overrides, replace
    from pretrain.config import PretrainConfig
    from pretrain.train import pretrain

    cfg = PretrainConfig(method=args.method, student=args.student, teacher=args.teacher, teacher_ckpt=args.teacher_ckpt,
                         data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                         image_size=args.image_size)
    cfg = replace(cfg, parse_overrides(args.overrides), "--set ")
    summary = pretrain(cfg, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def cmd_eval(args) -> int:
    from disco_bench import results
    from disco_bench.config import parse_overrides, replace
    from disco_bench.steps import eval_records
    from downstream.config import EvalConfig
    from downstream.registry import TASKS

    several = [name for name, task in TASKS.items() if getattr(task, "SEVERAL_CHECKPOINTS", False)]
    if len(args.ckpt) > 1 and args.task not in several:
        raise InputError(f"eval {args.task} takes exactly one --ckpt, got {len(args.ckpt)}; "
                         f"only {', '.join(sorted(several))} compare several")
    given = {"ckpt": args.ckpt[0], "ckpts": args.ckpt if args.task in several else None, "data": args.data,
             "protocol": args.protocol, "epochs": args.epochs, "image_size": args.image_size, "classes": args.classes,
             "per_class": args.per_class, "det_dataset": args.dataset, "det_backend": args.backend, "det_trials": args.trials,
             "det_max_iter": args.max_iter, "det_image_size": args.image_size if args.task == "detection" else None}
    cfg = replace(EvalConfig(), {k: v for k, v in given.items() if v is not None})
    cfg = replace(cfg, parse_overrides(args.overrides), "--set ")
    cfg = dataclasses.replace(cfg, out=str(Path(args.out) / "eval" / args.task))
    started = results.now()
    result = TASKS[args.task].run(cfg, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every process computed the same numbers; one writes them
        return 0
    h = results.config_hash({"task": args.task, "config": dataclasses.asdict(cfg)})
    recs = eval_records(cfg, result, config_hash=h, started_at=started, finished_at=results.now(), step=f"eval-{args.task}")
    results.append_records(Path(args.out) / "results.jsonl", recs)
    for r in recs:
        who = {k: r["extra"][k] for k in ("ckpt", "epoch") if k in (r.get("extra") or {})}  # several checkpoints/epochs
        tag = f" [{', '.join(f'{k} {v}' for k, v in who.items())}]" if who else ""
        print(f"{r['task']} {r['metric']} {r['dataset']}/{r['split']}{tag}: {r['value']:.2f}")
    print(f"records: {Path(args.out) / 'results.jsonl'}")
    return 0


def cmd_convert(args) -> int:
    from downstream.detection.convert import convert_checkpoint

    summary = convert_checkpoint(args.ckpt, args.output)
    print(f"converted {summary['keys']} {summary['arch']} keys for {args.to}: {summary['out']}")
    return 0


def cmd_report(args) -> int:
    from disco_bench.report import write_report

    print(f"leaderboard: {write_report(args.out)}")
    return 0


def cmd_data(args) -> int:
    from disco_bench.config import from_dict, parse_overrides
    from disco_bench.embedded import EmbeddedConfig, make_embedded

    cfg = from_dict(EmbeddedConfig, parse_overrides(args.overrides), "--set ")
    print(f"dataset: {make_embedded(args.out, cfg)}")
    return 0


PAPER_MODELS = {
    "students": ["efficientnet_b0", "efficientnet_b1", "mobilenetv3_large_100", "resnet18", "resnet34",
                 "vit_tiny_patch16_224", "xcit_tiny_12_p16_224"],
    "teachers": ["resnet50", "resnet101", "resnet152", "resnet50w2", "vit_small_patch16_224", "xcit_small_12_p16_224"],
}


def cmd_list(args) -> int:
    from disco_bench.suite import available_suites
    from downstream.registry import TASKS
    from pretrain.methods import METHODS

    listing = {"methods": sorted(METHODS), "tasks": sorted(TASKS), "suites": available_suites(), "models": PAPER_MODELS}
    chosen = {args.what: listing[args.what]} if args.what else listing
    print(json.dumps(chosen, indent=1))
    return 0


COMMANDS = {"run": cmd_run, "step": cmd_step, "pretrain": cmd_pretrain, "eval": cmd_eval, "report": cmd_report, "data": cmd_data, "convert": cmd_convert,
            "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines reach a log file or pipe as they happen
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to resume\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
