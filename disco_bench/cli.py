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
import tempfile
import time
from pathlib import Path

from infra.errors import InputError, one_line


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` ends each option with its default; an option whose default comes from a typed
    config (None here: 'not given') names that default in its own help text instead."""

    def _get_help_string(self, action: argparse.Action) -> str:
        unset = action.default is None or action.default is False or action.default == []
        if unset or action.default == argparse.SUPPRESS or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (and the choices), exit 2; help
    shows each option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        raise SystemExit(2)


def config_default(cls: type, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (what an option left out gives)."""
    field = cls.__dataclass_fields__[name]
    return field.default


def _add_set(p: argparse.ArgumentParser) -> None:
    # extend: a repeated --set adds to the earlier ones (a repeated key is an error, see config.parse_overrides)
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set epochs=2 distill_reduction=mean (suites: pretrain.epochs=2)",
    )


def _count(text: str) -> int:
    """argparse type of a count that may be 0 (--retry)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 0")
    return value


def _suite_scopes() -> dict[str, type]:
    """scope prefix -> the typed config a suite's ``--set scope.key=value`` reaches (disco_bench.steps)."""
    from downstream.config import EvalConfig
    from pretrain.config import PretrainConfig

    return {"pretrain": PretrainConfig, "eval": EvalConfig}


def _check_suite_overrides(overrides: dict) -> None:
    """Every ``--set scope.key=value`` of a suite names a scope and a field, with a valid value, before
    anything runs (also when no step of the selection reads it)."""
    from disco_bench.config import check_scopes, from_dict, scoped

    scopes = _suite_scopes()
    check_scopes(overrides, list(scopes))
    _check_override_paths(overrides)
    for scope, cls in scopes.items():
        from_dict(cls, scoped(overrides, scope), f"--set {scope}.")
        if "out" in scoped(overrides, scope):  # each step's folder is set by the suite: it would be ignored
            raise InputError(
                f"--set {scope}.out: a suite step writes under the suite's --out (checkpoints/STEP, "
                "eval/STEP); expected --out to move the whole suite"
            )


def _check_override_paths(overrides: dict) -> None:
    """A ``--set SCOPE.KEY=PATH`` of a file or folder a step reads names one that is there, before any
    step runs (a pre-training folder: an ImageFolder with train/)."""
    from disco_bench.steps import PATH_KEYS
    from pretrain.data import check_image_folder

    for key, value in overrides.items():
        scope, _, name = key.partition(".")
        if name not in PATH_KEYS or value in ("", None):
            continue
        for item in value if isinstance(value, list) else [value]:
            path = Path(str(item)).expanduser()
            if name == "data":
                if not path.is_dir():
                    what = "an existing file" if path.exists() else "not found"
                    raise InputError(f"--set {key}={item}: {what}; expected a dataset folder")
                if scope == "pretrain":
                    check_image_folder(path / "train")
            elif not path.is_file():
                what = "a folder" if path.is_dir() else "not found"
                raise InputError(f"--set {key}={item}: {what}; expected a file (a checkpoint or list)")


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder: an existing file, or a place where nothing can be written, is an
    error before any work starts. Nothing is created here (a failed command leaves no folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: expected a folder, but it is an existing file")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {path}: expected a folder, but {ancestor} is an existing file")
    try:
        with tempfile.TemporaryFile(dir=ancestor):  # the one reliable test (root ignores permission bits)
            pass
    except OSError as exc:
        raise InputError(
            f"{flag} {path}: cannot write in {ancestor} ({exc.strerror or exc}); expected a writable folder"
        ) from None
    return path


def build_parser() -> argparse.ArgumentParser:
    from disco_bench.launchers import LAUNCHERS
    from disco_bench.suite import available_suites
    from downstream.config import CPU_DETECTION_BATCH, EvalConfig
    from downstream.registry import TASKS
    from pretrain.config import PretrainConfig
    from pretrain.methods import METHODS

    def ev(name: str):
        return config_default(EvalConfig, name)

    def pt(name: str):
        return config_default(PretrainConfig, name)

    parser = OneLineParser(prog="disco-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("run", help="run a suite of steps (skips finished steps)")
    p.add_argument(
        "--suite",
        required=True,
        metavar="NAME|FILE.yaml",
        help=f"a suite name ({', '.join(available_suites())}) or a suite YAML file",
    )
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding the suite's datasets (default: generate embedded ones)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list every step, what it needs and produces, and its GPU-hours and CPU-time estimate; run nothing",
    )
    _add_dataset(p)
    p.add_argument(
        "--reuse",
        default=None,
        metavar="DIR",
        help="a finished run's output folder: steps it did with the same config (e.g. cpu's, in a "
        "cpu-full run) are copied from there instead of run again",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATTERN",
        help="run the steps whose id or tag matches (shell-style: 'linear-*', 'table3'), plus their dependencies",
    )
    p.add_argument(
        "--retry", type=_count, default=0, metavar="N", help="run a failed step up to N more times"
    )
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: this process; torchrun: --nproc processes per step; slurm: one submitit job per step",
    )
    p.add_argument(
        "--nproc", type=int, default=1, help="processes (GPUs) per distributed step (torchrun, slurm)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="local: run up to N independent steps at once, each in its own process with "
        "cores/N threads (the cores this process may use) and its own GPU when there are N",
    )
    p.add_argument(
        "--launcher-opt",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="submitit parameters, e.g. slurm_partition=gpu timeout_min=2880 (cluster=local: no SLURM)",
    )
    _add_set(p)

    p = sub.add_parser(
        "step", help="run one step of a suite alone (what the torchrun and slurm launchers call)"
    )
    p.add_argument("--suite", required=True, help="suite name or file")
    p.add_argument("--step", required=True, help="step id")
    p.add_argument("--out", default="results", help="the suite's output folder")
    p.add_argument(
        "--data-root", default=None, help="folder holding the suite's datasets (default: generated)"
    )
    p.add_argument(
        "--records", default=None, help="write the step's records here (JSON) instead of OUT/results.jsonl"
    )
    p.add_argument(
        "--retry", type=_count, default=0, metavar="N", help="run a failed step up to N more times"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_dataset(p)
    _add_set(p)

    p = sub.add_parser("pretrain", help="pre-train one student or teacher")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="pre-training method")
    p.add_argument("--student", required=True, help="timm model name (e.g. efficientnet_b0, resnet18)")
    p.add_argument(
        "--teacher", default=None, help="teacher architecture, when the checkpoint does not name it"
    )
    p.add_argument(
        "--teacher-ckpt", default=None, help="the teacher's checkpoint (distilling methods: disco, seed, ...)"
    )
    p.add_argument("--data", required=True, help="ImageFolder root holding train/")
    # None: not given (the config's default), so a --set of the same key is not a conflict
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default {pt('epochs')} (the paper's: days on a CPU; a note says so before it starts)",
    )
    p.add_argument("--batch-size", type=int, default=None, help=f"global batch; default {pt('batch_size')}")
    p.add_argument("--image-size", type=int, default=None, help=f"default {pt('image_size')}")
    p.add_argument("--out", required=True, help="run folder: last.pt, final.pt, logs")
    again = p.add_mutually_exclusive_group()
    # resuming is what a rerun does; the flag stays accepted (and does nothing) for old scripts
    again.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    again.add_argument(
        "--restart",
        action="store_true",
        help="discard OUT/last.pt, final.pt and the logs of an earlier run there; start from step 0 "
        "(without it a rerun continues from OUT/last.pt of the same run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_set(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a downstream task")
    p.add_argument("task", choices=sorted(TASKS), help="the downstream task")
    p.add_argument(
        "--ckpt",
        required=True,
        action="append",
        help="checkpoint to evaluate; tsne and mi take several (--ckpt A --ckpt B), compared side by side",
    )
    p.add_argument(
        "--data",
        required=True,
        help="dataset root: an ImageFolder with train/ and val/ (linear, semisup, knn, tsne, mi), CIFAR "
        "pickles (cifar), a VOCdevkit or COCO folder (detection)",
    )
    p.add_argument(
        "--protocol",
        choices=["paper", "fast"],
        default=None,
        help=f"default {ev('protocol')}: SGD on augmented images for --epochs (the paper's "
        f"{ev('epochs')} epochs at {ev('image_size')} px: hours on a CPU); fast: L-BFGS on cached "
        "features, minutes (linear, semisup, cifar, mi)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs of the paper protocol's probe and of mi's classifier; default {ev('epochs')}",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"every task: input size of the evaluated images (default {ev('image_size')}); detection: "
        "train and test at this short side instead of the paper's 400-800 / 800",
    )
    p.add_argument(
        "--baseline",
        choices=["random-init"],
        default=None,
        help="also evaluate a randomly initialised encoder of --ckpt's architecture (same seed): the "
        "floor a pre-training must clear, recorded as method random-init",
    )
    p.add_argument(
        "--classes", type=int, default=None, help=f"tsne: how many classes of val/ (default {ev('classes')})"
    )
    p.add_argument(
        "--per-class", type=int, default=None, help=f"tsne: images per class (default {ev('per_class')})"
    )
    p.add_argument(
        "--dataset",
        choices=["voc", "coco"],
        default=None,
        help=f"detection: VOC (Faster R-CNN) or COCO (Mask R-CNN); default {ev('det_dataset')}",
    )
    p.add_argument(
        "--backend",
        choices=["torchvision", "detectron2"],
        default=None,
        help=f"detection engine; default {ev('det_backend')} (an FPN head); detectron2 runs the "
        "paper's C4 head (ResNets)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"detection: fine-tune N times, record mean and std (default {ev('det_trials')}; paper VOC: 5)",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="detection: shorten the paper schedule to N iterations (default: the paper's 48,000 VOC / "
        f"180,000 COCO, at batch 32 on a GPU and {CPU_DETECTION_BATCH} on a CPU)",
    )
    p.add_argument(
        "--out", default="results", help="records go to OUT/results.jsonl, files to OUT/eval/TASK/"
    )
    p.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="evaluate a checkpoint of a run that has not finished (a mid-run last.pt); its records say so",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_set(p)

    p = sub.add_parser("convert", help="convert a checkpoint's backbone for another framework")
    p.add_argument("--to", required=True, choices=["detectron2"])
    p.add_argument("ckpt", help="student or teacher checkpoint (ResNet backbone)")
    p.add_argument("output", help="output file (.pkl for detectron2)")

    p = sub.add_parser("report", help="regenerate LEADERBOARD.md from OUT/results.jsonl")
    p.add_argument("--out", default="results", help="folder holding results.jsonl")

    p = sub.add_parser("data", help="datasets: generate the embedded ones")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    q = data_sub.add_parser(
        "make", help="write an embedded dataset (ImageFolder, CIFAR pickles or VOC/COCO scenes)"
    )
    q.add_argument("--out", required=True, help="folder to write the dataset in")
    q.add_argument(
        "--kind",
        choices=["imagefolder", "cifar", "detection"],
        default="imagefolder",
        help="imagefolder (train/ and val/), cifar (the official python pickles) or detection (scenes in "
        "both the VOC and the COCO layout); --set takes that generator's fields",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_set(q)

    p = sub.add_parser("list", help="list methods, tasks, suites and the paper's models")
    p.add_argument(
        "what", nargs="?", choices=["methods", "tasks", "suites", "models"], default=None, help="default: all"
    )
    return parser


def _add_dataset(p) -> None:
    p.add_argument(
        "--dataset",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=PATH",
        help="put your own folder in the place of the suite's dataset KEY (same layout, e.g. an "
        "ImageFolder with train/ and val/); its results are named after the folder",
    )


def _given_datasets(pairs: list[str]) -> dict[str, str]:
    given = {}
    for pair in pairs:
        key, sep, folder = pair.partition("=")
        if not sep or not key or not folder:
            raise InputError(f"--dataset {pair}: expected KEY=PATH, e.g. --dataset a=~/data/mydata")
        given[key] = folder
    return given


def cmd_run(args) -> int:
    from disco_bench.config import parse_overrides
    from disco_bench.launchers import make_launcher
    from disco_bench.runner import run_suite
    from disco_bench.suite import give_datasets, load_suite

    overrides = parse_overrides(args.overrides)
    _check_suite_overrides(overrides)
    suite = give_datasets(load_suite(args.suite), _given_datasets(args.dataset))
    data_root = Path(args.data_root) if args.data_root else None
    launcher = None
    if not args.dry_run:
        writable_folder(args.out)
        launcher = make_launcher(
            args.launcher,
            Path(args.out),
            args.nproc,
            args.retry,
            parse_overrides(args.launcher_opt),
            jobs=args.jobs,
        )
    return run_suite(
        suite,
        Path(args.out),
        data_root,
        overrides,
        dry_run=args.dry_run,
        progress=not args.quiet,
        only=args.only,
        retries=args.retry,
        launcher=launcher,
        reuse=Path(args.reuse) if args.reuse else None,
    )


def cmd_step(args) -> int:
    from disco_bench import results
    from disco_bench.config import parse_overrides
    from disco_bench.step_request import StepRequest, run_request
    from infra.checkpoint import atomic_write_text

    overrides = parse_overrides(args.overrides)
    _check_suite_overrides(overrides)
    writable_folder(args.out)
    request = StepRequest(
        suite=args.suite,
        step=args.step,
        out=args.out,
        data_root=args.data_root,
        overrides=overrides,
        retries=args.retry,
        progress=not args.quiet,
        datasets=_given_datasets(args.dataset),
    )
    records = run_request(request)
    from infra.distributed import DistInfo

    if not DistInfo.from_env().is_main:
        return 0  # under torchrun only rank 0 hands records back
    if args.records:
        atomic_write_text(args.records, json.dumps(records))
    else:
        results.append_records(Path(args.out) / "results.jsonl", records)
    print(f"{args.step}: {len(records)} records")
    return 0


def cmd_pretrain(args) -> int:
    from disco_bench.config import parse_overrides, refuse_unread, replace
    from infra.distributed import DistInfo
    from pretrain.config import PretrainConfig
    from pretrain.train import pretrain

    flags = {
        "method": args.method,
        "student": args.student,
        "teacher": args.teacher,
        "teacher_ckpt": args.teacher_ckpt,
        "data": args.data,
        "out": args.out,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    overrides = parse_overrides(args.overrides)
    cfg = replace(replace(PretrainConfig(), flags), overrides, "--set ")  # a bad value: its field's error
    set_once(flags, overrides)
    refuse_unread(cfg.unread([*flags, *overrides]), spellings(flags, overrides), cfg.why_unread)
    writable_folder(cfg.out)
    if args.resume:
        print("note: --resume is the default (a rerun continues from OUT/last.pt); the flag does nothing")
    note = pretrain_long_run_note(cfg)
    if note and DistInfo.from_env().is_main:
        print(note)  # stdout: stderr holds only an error line
    summary = pretrain(cfg, restart=args.restart, progress=not args.quiet)
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def cmd_eval(args) -> int:
    from disco_bench.config import parse_overrides, refuse_unread, replace
    from downstream.config import EvalConfig
    from downstream.registry import TASKS
    from infra.distributed import DistInfo
    from pretrain.teachers import unfinished_checkpoints_allowed

    several = [name for name, task in TASKS.items() if getattr(task, "SEVERAL_CHECKPOINTS", False)]
    if len(args.ckpt) > 1 and args.task not in several:
        raise InputError(
            f"eval {args.task} takes exactly one --ckpt, got {len(args.ckpt)}; "
            f"only {', '.join(sorted(several))} compare several"
        )
    given = {
        "ckpt": args.ckpt[0],
        "ckpts": args.ckpt if args.task in several else None,
        "data": args.data,
        "protocol": args.protocol,
        "epochs": args.epochs,
        "image_size": args.image_size if args.task != "detection" else None,
        "classes": args.classes,
        "per_class": args.per_class,
        "det_dataset": args.dataset,
        "det_backend": args.backend,
        "det_trials": args.trials,
        "det_max_iter": args.max_iter,
        "det_image_size": args.image_size if args.task == "detection" else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    overrides = parse_overrides(args.overrides)
    cfg = replace(replace(EvalConfig(), given), overrides, "--set ")  # a bad value: its field's error
    set_once(given | {"out": args.out}, overrides, EVAL_FLAGS)  # cfg.out is derived from --out
    unread = cfg.unread([*given, *overrides], args.task)
    refuse_unread(
        unread, spellings(given, overrides, EVAL_FLAGS), lambda name: cfg.why_unread(name, args.task)
    )
    task_out = Path(args.out) / "eval" / args.task
    cfg = dataclasses.replace(cfg, out=str(task_out))
    writable_folder(args.out)
    started_clock = time.time()
    with unfinished_checkpoints_allowed(args.allow_unfinished):
        evaluations = [cfg]
        if args.baseline:
            evaluations = with_random_init_floor(args.task, cfg, several)
        note = eval_long_run_note(args.task, evaluations)
        if note and DistInfo.from_env().is_main:
            print(note)  # stdout: stderr holds only an error line
        records = [rec for one in evaluations for rec in evaluate(args.task, one, not args.quiet)]
    if (
        not DistInfo.from_env().is_main
    ):  # under torchrun every process computed the same numbers; one writes them
        return 0
    records_path = Path(args.out) / "results.jsonl"
    from disco_bench import results

    results.append_records(records_path, records)
    for r in records:
        who = {
            k: r["extra"][k] for k in ("ckpt", "epoch") if k in (r.get("extra") or {})
        }  # several checkpoints/epochs
        tag = f" [{', '.join(f'{k} {v}' for k, v in who.items())}]" if who else ""
        base = " (random-init floor)" if r.get("method") == "random-init" and len(evaluations) > 1 else ""
        print(f"{r['task']} {r['metric']} {r['dataset']}/{r['split']}{tag}{base}: {r['value']:.2f}")
    print(f"records: {records_path}")
    for path in files_written(task_out, since=started_clock):
        print(f"wrote: {path}")
    return 0


def evaluate(task: str, cfg, progress: bool) -> list[dict]:
    """Run ``task`` with ``cfg`` and return its records (what ``eval`` appends to results.jsonl)."""
    from disco_bench import results
    from disco_bench.steps import eval_records
    from downstream.registry import TASKS

    started = results.now()
    result = TASKS[task].evaluate(cfg, progress=progress)
    h = results.config_hash({"task": task, "config": dataclasses.asdict(cfg)})
    return eval_records(
        cfg, result, config_hash=h, started_at=started, finished_at=results.now(), step=f"eval-{task}"
    )


def with_random_init_floor(task: str, cfg, several: list[str]) -> list:
    """``--baseline random-init``: the configs to evaluate so that the records hold the evaluated
    checkpoint and a randomly initialised encoder of its architecture (the same seed), written by
    the suite's ``init`` step code under OUT/eval/TASK/random-init/. Tasks that compare checkpoints
    draw it beside the others in one run; the rest evaluate it as a second run."""
    from disco_bench.cost import checkpoint_arch
    from disco_bench.steps import InitConfig, write_random_init

    arch = checkpoint_arch(cfg.ckpt)
    if arch is None:
        raise InputError(
            f"--baseline random-init: cannot read the architecture of --ckpt {cfg.ckpt}; expected a checkpoint "
            "this tool reads (pretrain's, or a supported external format)"
        )
    floor = Path(cfg.out) / "random-init" / f"{arch}-seed{cfg.seed}.pt"
    write_random_init(floor, InitConfig(student=arch, seed=cfg.seed))
    if task in several:
        labels = list(cfg.ckpt_labels) + ["random-init"] if cfg.ckpt_labels else []
        return [dataclasses.replace(cfg, ckpts=[*cfg.ckpts, str(floor)], ckpt_labels=labels)]
    return [cfg, dataclasses.replace(cfg, ckpt=str(floor), ckpts=[])]


def eval_long_run_note(task: str, evaluations: list) -> str | None:
    """The one-line warning of an eval expected to run past ten minutes here (disco_bench.cost)."""
    import torch

    from disco_bench import cost

    cfg = evaluations[0]
    on_gpu = cfg.device != "cpu" and torch.cuda.is_available()
    note = cost.eval_note(task, cfg.for_device(on_gpu), cost.checkpoint_arch(cfg.ckpt), on_gpu)
    if note and len(evaluations) > 1:
        note = note.replace(f"eval {task} is", f"eval {task} (each of {len(evaluations)} runs) is", 1)
    return note


def pretrain_long_run_note(cfg) -> str | None:
    """The one-line warning of a pre-training expected to run past ten minutes here (disco_bench.cost)."""
    import torch

    from disco_bench import cost

    return cost.pretrain_note(cfg, cfg.device != "cpu" and torch.cuda.is_available())


def files_written(folder: Path, since: float) -> list[Path]:
    """Files under ``folder`` created or changed since ``since`` (a time.time()), sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= since - 0.05
    )  # file clocks lag a tick


EVAL_FLAGS = {
    "ckpt": "--ckpt",
    "ckpts": "--ckpt",
    "per_class": "--per-class",
    "det_dataset": "--dataset",
    "det_backend": "--backend",
    "det_trials": "--trials",
    "det_max_iter": "--max-iter",
    "det_image_size": "--image-size",
}


def spellings(flags: dict, overrides: dict, spelled: dict[str, str] | None = None) -> dict[str, str]:
    """field -> how the command line gave it (``--teacher resnet50``, ``--set key=value``)."""
    out = {k: f"{(spelled or {}).get(k, '--' + k.replace('_', '-'))} {v}" for k, v in flags.items()}
    return out | {k: f"--set {k}={v}" for k, v in overrides.items()}


def set_once(flags: dict, overrides: dict, spelled: dict[str, str] | None = None) -> None:
    """A setting given by its own flag and again by ``--set``: one of the two would silently win."""
    for key, value in overrides.items():
        if key in flags:
            flag = (spelled or {}).get(key, "--" + key.replace("_", "-"))
            raise InputError(
                f"--set {key}={value} repeats {flag} {flags[key]}: expected each setting once (give it as {flag})"
            )


def cmd_convert(args) -> int:
    from downstream.detection.convert import convert_checkpoint

    summary = convert_checkpoint(args.ckpt, args.output)
    print(f"converted {summary['keys']} {summary['arch']} keys for {args.to}: {summary['out']}")
    return 0


def cmd_report(args) -> int:
    from disco_bench.report import write_report

    out = Path(args.out)
    if not out.is_dir():  # a typo'd --out must not become a new folder holding an empty board
        what = "an existing file" if out.exists() else "not found"
        raise InputError(f"--out {out}: {what}; expected the output folder of a run (holding results.jsonl)")
    print(f"leaderboard: {write_report(args.out)}")
    return 0


def cmd_data(args) -> int:
    from disco_bench.config import from_dict, parse_overrides
    from disco_bench.embedded import EmbeddedConfig, make_embedded
    from disco_bench.embedded_cifar import EmbeddedCifarConfig, make_embedded_cifar
    from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection

    kinds = {  # --kind -> (its generator's config, the generator)
        "imagefolder": (EmbeddedConfig, lambda out, cfg, progress: make_embedded(out, cfg, progress)),
        "cifar": (EmbeddedCifarConfig, lambda out, cfg, progress: make_embedded_cifar(out, cfg)),
        "detection": (
            EmbeddedDetectionConfig,
            lambda out, cfg, progress: make_embedded_detection(out, cfg, progress),
        ),
    }
    config, make = kinds[args.kind]
    cfg = from_dict(config, parse_overrides(args.overrides), "--set ")
    writable_folder(args.out)
    print(f"dataset: {make(args.out, cfg, not args.quiet)}")
    return 0


PAPER_MODELS = {
    "students": [
        "efficientnet_b0",
        "efficientnet_b1",
        "mobilenetv3_large_100",
        "resnet18",
        "resnet34",
        "vit_tiny_patch16_224",
        "xcit_tiny_12_p16_224",
    ],
    "teachers": [
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50w2",
        "vit_small_patch16_224",
        "xcit_small_12_p16_224",
    ],
}


def cmd_list(args) -> int:
    from disco_bench.suite import available_suites
    from downstream.registry import TASKS
    from pretrain.methods import METHODS

    listing = {
        "methods": sorted(METHODS),
        "tasks": sorted(TASKS),
        "suites": available_suites(),
        "models": PAPER_MODELS,
    }
    chosen = {args.what: listing[args.what]} if args.what else listing
    print(json.dumps(chosen, indent=1))
    return 0


COMMANDS = {
    "run": cmd_run,
    "step": cmd_step,
    "pretrain": cmd_pretrain,
    "eval": cmd_eval,
    "report": cmd_report,
    "data": cmd_data,
    "convert": cmd_convert,
    "list": cmd_list,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines reach a log file or pipe as they happen
        sys.stdout.reconfigure(line_buffering=True)
    try:
        _check_out_outside_data(args)
        with _output_lock(args):
            return COMMANDS[args.command](args)
    except InputError as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        again = (
            "the same command without --restart"
            if getattr(args, "restart", False)
            else "the same command again"
        )
        # only pre-training (alone or as a suite's step) continues where it stopped; the rest starts over
        resumes = args.command in ("pretrain", "run", "step")
        sys.stderr.write(f"interrupted; run {again} to {'resume' if resumes else 'start it over'}\n")
        return 130


# the folders of a dataset root that the readers list (ImageFolder, COCO, VOC, CIFAR layouts)
DATA_FOLDERS = {
    "train",
    "val",
    "train2017",
    "val2017",
    "annotations",
    "VOCdevkit",
    "cifar-10-batches-py",
    "cifar-100-python",
}


def _check_out_outside_data(args) -> None:
    """``--out`` of pretrain or eval may not lie in one of ``--data``'s own folders (DATA_FOLDERS):
    the folders the run creates there would become part of the dataset (a class folder under
    train/). Checked before anything is made. ``--out DATA`` itself, or a folder beside the
    splits, is allowed."""
    if args.command not in ("pretrain", "eval") or not getattr(args, "data", None):
        return
    out, data = Path(args.out).expanduser().resolve(), Path(args.data).expanduser().resolve()
    inside = out.relative_to(data).parts if data in out.parents else ()
    if inside and inside[0] in DATA_FOLDERS:
        raise InputError(
            f"--out {args.out} is inside --data {args.data}: the run's files would become part of the "
            "dataset; expected an output folder outside it"
        )


def _output_lock(args):
    """One writer per output folder (infra.outlock): pretrain, eval, run (not --dry-run) and step
    hold their --out (a step that its suite's run started goes on under the run's lock); data make
    holds ``.SET.disco-bench.lock`` beside its set, which it swaps for a new folder."""
    from contextlib import nullcontext

    from infra.outlock import output_lock

    if args.command in ("pretrain", "eval", "run", "step") and not getattr(args, "dry_run", False):
        return output_lock(args.out)
    if args.command == "data" and getattr(args, "data_command", None) == "make":
        writable_folder(args.out)  # an existing file, or no place to write: one error naming --out
        target = Path(os.path.abspath(args.out))
        return output_lock(
            target.parent, name=f".{target.name}.disco-bench.lock", what=f"dataset folder {args.out}"
        )
    return nullcontext()


if __name__ == "__main__":
    raise SystemExit(main())
