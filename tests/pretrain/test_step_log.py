"""The per-step loss log of a pre-training run: OUT/log.csv and the TensorBoard events next to it
hold the same numbers, one point per step, readable by TensorBoard's own reader."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator  # a dev dependency: CI has it

from pretrain.train import pretrain


def test_tensorboard_events_hold_every_logged_step(tiny_pretrain_cfg):
    cfg = dataclasses.replace(tiny_pretrain_cfg, max_steps=3)
    pretrain(cfg, progress=False)
    out = Path(cfg.out)
    with open(out / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]

    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    reader = event_accumulator.EventAccumulator(str(out / "tb"))
    reader.Reload()
    assert set(reader.Tags()["scalars"]) == {
        "lr",
        "loss",
        "loss_con",
    }  # step and epoch are the axes, not series
    for tag in ("lr", "loss", "loss_con"):
        points = reader.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3]
        # TensorBoard stores float32: the CSV's float64 values to 7 significant digits
        assert [p.value for p in points] == pytest.approx([float(r[tag]) for r in rows], rel=1e-6)
