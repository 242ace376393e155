"""Reading results.jsonl checks every record: a junk line is one error naming file:line and the field
(never a traceback, never a NaN or a 250 % top-1 printed as a result), an exact duplicate line counts
once, and `report` of a folder that does not exist is an error rather than a new empty board."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from paper_records import written_record

from disco_bench.cli import main
from disco_bench.results import append_records, read_records
from infra.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


record = written_record  # a valid record as a run writes it, with the fields a test changes


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def one_error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_records(path)
    message = str(info.value)
    assert "\n" not in message
    return message


JUNK = [  # (what, the second line of the file, what the message must name)
    ("NaN value", json.dumps(record(value=float("nan"))), ("'value' is nan", "finite")),
    ("infinite value", json.dumps(record(value=float("inf"))), ("'value' is inf", "finite")),
    ("1e309 (overflows to inf)", json.dumps(record()).replace("51.5", "1e309"), ("'value' is inf",)),
    ("top-1 of 250 %", json.dumps(record(value=250.0)), ("250.0", "'top1'", "[0, 100]")),
    ("top-1 of -5 %", json.dumps(record(value=-5.0)), ("-5.0", "[0, 100]")),
    ("kNN top-5 of 101 %", json.dumps(record("top5_k20", 101.0, "knn")), ("'top5_k20'", "[0, 100]")),
    ("AP of 120", json.dumps(record("box_AP50", 120.0, "detection")), ("'box_AP50'", "[0, 100]")),
    ("negative MI", json.dumps(record("mi_xt_bits", -0.5, "mi")), ("'mi_xt_bits'", ">= 0")),
    ("silhouette past 1", json.dumps(record("silhouette", 1.5, "tsne")), ("'silhouette'", "[-1, 1]")),
    ("NaN loss", json.dumps(record("final_loss", float("nan"), "pretrain")), ("'value' is nan",)),
    ("a boolean value", json.dumps({**record(), "value": True}), ("'value' is true", "expected a number")),
    ("a typo'd task", json.dumps(record(task="lineer")), ("'task' is \"lineer\"", "linear", "pretrain")),
    ("an integer id", json.dumps(record(id=7)), ("'id' is 7", "expected a string")),
    ("a string protocol", json.dumps(record(protocol="paper")), ("'protocol' is \"paper\"", "an object")),
    (
        "a string protocol.pretrain",
        json.dumps(record(protocol={"pretrain": "moco"})),
        ("'protocol.pretrain'", "an object"),
    ),
    (
        "protocol.pretrain.data of the wrong shape",
        json.dumps(record(protocol={"pretrain": {"data": "digits"}})),
        ("'protocol.pretrain.data'", "name, fingerprint, path"),
    ),
    ("a string seed", json.dumps(record(seed="0")), ("'seed' is \"0\"", "an integer")),
    ("a list as extra", json.dumps(record(extra=[1])), ("'extra' is [1]", "an object or null")),
    ("a number as the line", "5", ("is 5", "JSON object")),
    ("a field missing", json.dumps({k: v for k, v in record().items() if k != "dataset"}), ("dataset",)),
    ("not JSON", "{'task': 'linear'}", ("not valid JSON",)),
    ("JSON nested too deeply", "[" * 100_000 + "]" * 100_000, ("not valid JSON",)),
]


@pytest.mark.parametrize(("line", "names"), [j[1:] for j in JUNK], ids=[j[0] for j in JUNK])
def test_a_junk_record_is_one_error_naming_file_line_and_field(tmp_path, line, names):
    path = write_lines(tmp_path / "results.jsonl", json.dumps(record(metric="top5")), line)
    message = one_error(path)
    assert message.startswith(f"{path}:2"), message
    for name in names:
        assert name in message, (name, message)


@pytest.mark.parametrize(
    ("metric", "task", "value"),
    [
        ("top1", "linear", 0.0),
        ("top1", "linear", 100.0),
        ("silhouette", "tsne", -1.0),
        ("final_loss", "pretrain", -3.0),
    ],
)
def test_values_on_the_edge_of_their_range_are_read(tmp_path, metric, task, value):
    path = write_lines(tmp_path / "results.jsonl", json.dumps(record(metric, value, task)))
    assert [r["value"] for r in read_records(path)] == [value]


def test_an_exact_duplicate_line_counts_once(tmp_path):
    line = json.dumps(record())
    path = write_lines(tmp_path / "results.jsonl", line, json.dumps(record(metric="top5")), line)
    assert [r["metric"] for r in read_records(path)] == ["top1", "top5"]


def test_two_different_records_with_one_id_are_an_error(tmp_path):
    first = record()
    path = write_lines(tmp_path / "results.jsonl", json.dumps(first), json.dumps(first | {"value": 60.0}))
    message = one_error(path)
    assert f"{path}:2 record {first['id']}" in message and "line 1" in message


def test_a_folder_or_a_binary_file_in_place_of_the_records_is_one_error(tmp_path):
    (tmp_path / "dir" / "results.jsonl").mkdir(parents=True)
    assert "is a folder" in one_error(tmp_path / "dir" / "results.jsonl")
    binary = tmp_path / "results.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert "not a text file" in one_error(binary)


def test_a_record_the_report_would_refuse_is_never_appended(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, [record()])
    before = path.read_bytes()
    with pytest.raises(InputError, match="new record for .*'value' is nan"):
        append_records(path, [record(metric="top5", value=float("nan"))])
    assert path.read_bytes() == before


@pytest.mark.parametrize("suite", ["cpu", "cpu-select"])
def test_the_committed_results_are_valid_records(suite):
    assert read_records(ROOT / "results" / suite / "results.jsonl")


def report(out: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", "--out", str(out)])
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("what", "spoil", "names"),
    [
        ("binary", lambda p: p.write_bytes(b"\x00\xff" * 10), "not a text file"),
        ("directory", lambda p: p.mkdir(), "is a folder"),
        ("integer id", lambda p: p.write_text(json.dumps(record(id=7)) + "\n"), "'id' is 7"),
        ("string protocol", lambda p: p.write_text(json.dumps(record(protocol="x")) + "\n"), "'protocol'"),
    ],
)
def test_report_of_junk_is_one_line_without_a_traceback(tmp_path, what, spoil, names):
    spoil(tmp_path / "results.jsonl")
    code, err = report(tmp_path)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and names in err, err
    assert not (tmp_path / "LEADERBOARD.md").exists()


def test_report_of_a_folder_that_does_not_exist_is_an_error(tmp_path):
    code, err = report(tmp_path / "does" / "not" / "exist")
    assert code == 2 and "not found" in err and err.count("\n") == 1, err
    assert not (tmp_path / "does").exists()
