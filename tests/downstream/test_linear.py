"""``eval linear`` end to end on a tiny ImageFolder, both protocols, through the task and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from disco_bench.cli import main
from downstream import linear

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_linear_returns_top1_and_top5(eval_cfg, protocol):
    result = linear.run(dataclasses.replace(eval_cfg, protocol=protocol, epochs=1), progress=False)
    values = {m.metric: m.value for m in result.measurements}
    assert set(values) == {"top1", "top5"}
    # 12 val images over 3 classes: every accuracy is a multiple of 100/12, and top-5 covers all 3 classes
    assert values["top5"] == 100.0 and round(values["top1"] * 12 / 100, 6).is_integer()
    assert result.protocol["protocol"] == protocol and result.protocol["train_images"] == 24
    if protocol == "paper":
        assert result.protocol["lr"] == 30.0 and result.protocol["milestones_epochs"] == [1]  # resnet10t: a ResNet
        assert (Path(eval_cfg.out) / "probe_last.pt").is_file()
    else:
        assert "epochs" not in result.protocol and "chosen_weight_decay" in result.protocol


def test_cli_eval_writes_records(eval_cfg, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["eval", "linear", "--ckpt", eval_cfg.ckpt, "--data", eval_cfg.data, "--protocol", "fast", "--image-size",
                 "16", "--out", str(out), "--quiet", "--set", "device=cpu", "fast_max_iter=30"])
    assert code == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["metric"] for r in records) == ["top1", "top5"]
    assert all(r["task"] == "linear" and r["protocol"]["eval"]["protocol"] == "fast" for r in records)
    assert "linear top1" in capsys.readouterr().out
