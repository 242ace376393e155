"""Untrusted checkpoints: a file that runs code when unpickled is refused by every load path with a
one-line error, and its code never runs; no code in the project unpickles without a guard."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from disco_bench.cli import main
from tests.pretrain.helpers import PlantsMarker, pretrain_args, save_student

ROOT = Path(__file__).resolve().parents[2]


def craft(path: Path, marker: Path) -> Path:
    """A file laid out like a checkpoint (a dict of tensors) with the payload hidden among them."""
    torch.save(
        {"format": "disco-bench/1", "state_dict": {"w": torch.zeros(2)}, "note": PlantsMarker(marker)}, path
    )
    return path


def test_the_crafted_file_really_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "control-marker"
    torch.load(craft(tmp_path / "control.pt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of a real attack


def moco_args(data, out, *extra: str) -> list[str]:
    return pretrain_args(
        data,
        out,
        *extra,
        student="resnet10t",
        epochs=1,
        batch_size=8,
        sets=("queue_size=16",),
        save_every=None,
    )


def eval_args(ckpt, data, out, *extra: str, sets: tuple[str, ...] = ()) -> list[str]:
    return [
        "eval",
        "linear",
        "--ckpt",
        str(ckpt),
        "--data",
        str(data),
        "--image-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        *extra,
        "--set",
        "device=cpu",
        *sets,
    ]


def teacher_path(tmp, data, evil):
    return moco_args(
        data, tmp / "run", "--method", "disco", "--teacher", "resnet10t", "--teacher-ckpt", str(evil)
    )


def resume_path(tmp, data, evil):
    (tmp / "run").mkdir()
    evil.replace(tmp / "run" / "last.pt")
    return [*moco_args(data, tmp / "run"), "--resume"]


def eval_path(tmp, data, evil):
    return eval_args(evil, data, tmp / "out", "--protocol", "fast")


def probe_state_path(tmp, data, evil):
    (tmp / "out" / "eval" / "linear").mkdir(parents=True)
    evil.replace(tmp / "out" / "eval" / "linear" / "probe_last.pt")
    return eval_args(
        save_student(tmp / "student.pt"),
        data,
        tmp / "out",
        "--protocol",
        "paper",
        "--epochs",
        "1",
        sets=("batch_size=8",),  # the paper protocol's SGD batch (the fast one reads none)
    )


def kd_teacher_path(tmp, data, evil):
    return eval_args(
        save_student(tmp / "student.pt"),
        data,
        tmp / "out",
        "--protocol",
        "fast",
        sets=(f"kd_teacher={evil}",),
    )


LOAD_PATHS = {
    "pretrain --teacher-ckpt": teacher_path,
    "pretrain --resume (OUT/last.pt)": resume_path,
    "eval --ckpt": eval_path,
    "eval paper probe resume (probe_last.pt)": probe_state_path,
    "eval --set kd_teacher": kd_teacher_path,
}


@pytest.mark.parametrize("where", list(LOAD_PATHS))
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(where, tiny_imagefolder, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = craft(tmp_path / "evil.pt", marker)
    argv = LOAD_PATHS[where](tmp_path, tiny_imagefolder, evil)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "was refused by the safe loader (weights_only=True): Unsupported global" in err
    assert "nothing in it was run or loaded" in err
    assert not marker.exists()
    assert not (tmp_path / "out" / "results.jsonl").exists() and not (tmp_path / "run" / "final.pt").exists()


def unguarded_loads(source: str) -> list[int]:
    """Lines calling torch.load without weights_only=True, or pickle.load/loads (unrestricted)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if owner == "torch" and node.func.attr == "load":
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
        if owner == "pickle" and node.func.attr in ("load", "loads"):
            lines.append(node.lineno)
    return lines


def test_the_checker_finds_an_unguarded_load():
    assert unguarded_loads(
        "import torch\ntorch.load(p)\ntorch.load(p, weights_only=True)\npickle.loads(b)"
    ) == [2, 4]


def test_no_code_loads_a_checkpoint_without_weights_only():
    found = {}
    for folder in ("pretrain", "downstream", "disco_bench", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if lines := unguarded_loads(path.read_text()):
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}


NOT_CHECKPOINTS = {
    "text": b"hello world\n",
    "JSON": b'{"epoch": 3, "state_dict": {}}',
    "CSV": b"step,loss\n1,0.5\n",
    "empty": b"",
    "pickle opcodes then garbage": b"\x80\x02garbage",
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_one_line_without_bad_advice(
    kind, tiny_imagefolder, tmp_path, capsys
):
    path = tmp_path / "model.pt"
    path.write_bytes(NOT_CHECKPOINTS[kind])
    code = main(eval_args(path, tiny_imagefolder, tmp_path / "out", "--protocol", "fast"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: checkpoint {path} ") and err.count("\n") == 1, err
    assert "expected" in err and "weights_only=False" not in err and ": ;" not in err, err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_the_refusal_names_what_the_file_asked_for_never_torchs_advice(tmp_path):
    from infra.checkpoint import safe_load
    from infra.errors import InputError

    marker = tmp_path / "marker"
    with pytest.raises(InputError) as exc:
        safe_load(craft(tmp_path / "evil.pt", marker))
    message = str(exc.value)
    assert "refused by the safe loader (weights_only=True): Unsupported global: GLOBAL getattr;" in message
    assert "weights_only=False" not in message and "Re-running" not in message and "\n" not in message
    assert not marker.exists()
