"""``eval linear`` end to end on a tiny ImageFolder, both protocols, through the task and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from disco_bench.cli import main
from downstream import linear
from downstream.kd import load_classifier
from tests.pretrain.helpers import hand_topk_accuracy


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_linear_top1_and_top5_are_those_of_the_trained_head_scored_by_hand(
    eval_cfg, seven_class_imagefolder, protocol
):
    cfg = dataclasses.replace(
        eval_cfg, data=str(seven_class_imagefolder), protocol=protocol, epochs=1, kd_save_classifier=True
    )
    result = linear.evaluate(cfg, progress=False)
    values = {m.metric: m.value for m in result.measurements}
    assert set(values) == {"top1", "top5"}
    # the probe's own head (saved for KD, standardisation folded in), run on val and scored by hand
    classifier, _ = load_classifier(Path(cfg.out) / "classifier.pt")
    val = linear.image_folder_probe_data(cfg.data, cfg.image_size).val
    images, labels = zip(*(val[i] for i in range(len(val))))
    with torch.no_grad():
        logits = classifier.eval()(torch.stack(images))
    assert len(labels) == 21 and logits.shape == (21, 7)
    assert values["top1"] == pytest.approx(hand_topk_accuracy(logits, labels, 1))
    assert values["top5"] == pytest.approx(hand_topk_accuracy(logits, labels, 5))
    assert values["top1"] <= values["top5"] < 100.0  # 7 classes: top-5 can (and here does) miss
    assert result.protocol["protocol"] == protocol and result.protocol["train_images"] == 28
    if protocol == "paper":
        assert result.protocol["lr"] == 30.0 and result.protocol["milestones_epochs"] == [
            1
        ]  # resnet10t: a ResNet
        assert (Path(cfg.out) / "probe_last.pt").is_file()
    else:
        assert "epochs" not in result.protocol and "chosen_weight_decay" in result.protocol


def test_cli_eval_writes_records(eval_cfg, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(
        [
            "eval",
            "linear",
            "--ckpt",
            eval_cfg.ckpt,
            "--data",
            eval_cfg.data,
            "--protocol",
            "fast",
            "--image-size",
            "16",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "device=cpu",
            "fast_max_iter=30",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["metric"] for r in records) == ["top1", "top5"]
    assert all(r["task"] == "linear" and r["protocol"]["eval"]["protocol"] == "fast" for r in records)
    assert "linear top1" in capsys.readouterr().out
