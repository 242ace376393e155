"""The Detectron2 converter without Detectron2: key names, the .pkl read back by the project's safe
loader (never an unrestricted pickle), key placement onto a C4 model's names, one-line errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from disco_bench.cli import main
from downstream.detection.convert import (
    convert_checkpoint,
    detectron2_key,
    place_weights,
    read_detectron2_weights,
    resnet_to_detectron2,
)
from infra.errors import InputError
from pretrain.models import build_backbone
from tests.pretrain.helpers import PlantsMarker, save_student


def test_key_names_by_hand():
    assert detectron2_key("conv1.weight") == "stem.conv1.weight"
    assert detectron2_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_key("layer1.0.bn2.weight") == "res2.0.conv2.norm.weight"
    assert detectron2_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert detectron2_key("layer3.5.downsample.1.running_mean") == "res4.5.shortcut.norm.running_mean"
    assert detectron2_key("layer2.1.conv3.weight") == "res3.1.conv3.weight"
    assert detectron2_key("fc.weight") is None and detectron2_key("layer5.0.conv1.weight") is None


def test_converted_file_reads_back_through_the_safe_loader_with_every_weight(tmp_path):
    ckpt = save_student(tmp_path / "r18.pt", "resnet18", seed=3)
    summary = convert_checkpoint(ckpt, tmp_path / "r18.pkl")
    weights = read_detectron2_weights(tmp_path / "r18.pkl")
    src = torch.load(ckpt, weights_only=True)["encoder"]["backbone"]
    assert summary["keys"] == len(weights) == len(src) == 120
    for theirs, ours in (
        ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("layer4.1.conv2.weight", "res5.1.conv2.weight"),
        ("layer4.0.downsample.1.weight", "res5.0.shortcut.norm.weight"),
    ):
        assert isinstance(weights[ours], np.ndarray) and np.array_equal(weights[ours], src[theirs].numpy()), (
            ours
        )
    with open(
        tmp_path / "r18.pkl", "rb"
    ) as handle:  # still Detectron2's own format (MODEL.WEIGHTS can read it)
        payload = pickle.load(handle)
    assert payload["matching_heuristics"] is True and payload["arch"] == "resnet18" and payload["__author__"]


def test_a_crafted_pkl_is_refused_without_running_anything(tmp_path):
    bad, marker = tmp_path / "bad.pkl", tmp_path / "planted"
    bad.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": PlantsMarker(marker)}}))
    with pytest.raises(
        InputError,
        match=r"bad.pkl is not a readable Detectron2 weights file \(refusing to load "
        r"pathlib.*touch",
    ):
        read_detectron2_weights(bad)
    assert not marker.exists()
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(
        InputError, match="expected Detectron2 weights, a dict whose 'model' maps names to numpy arrays"
    ):
        read_detectron2_weights(tmp_path / "list.pkl")
    with pytest.raises(InputError, match="Detectron2 weights file not found"):
        read_detectron2_weights(tmp_path / "missing.pkl")


def test_weights_are_placed_in_the_backbone_or_the_c4_res5_head():
    weights = resnet_to_detectron2(build_backbone("resnet18").state_dict(), "r18")
    # a C4 model's names: stem..res4 in the backbone, res5 in the box head, plus heads the file lacks
    model_state = {
        ("roi_heads." if k.startswith("res5.") else "backbone.") + k: torch.zeros(v.shape)
        for k, v in weights.items()
    }
    model_state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(4, 512)
    placed = place_weights(weights, model_state, "r18.pkl")
    assert set(placed) == set(model_state) - {"roi_heads.box_predictor.cls_score.weight"}
    assert torch.equal(
        placed["roi_heads.res5.0.conv1.weight"], torch.from_numpy(weights["res5.0.conv1.weight"])
    )
    assert "backbone.res4.1.conv2.weight" in placed and "backbone.stem.conv1.weight" in placed
    with pytest.raises(
        InputError, match=r"r18.pkl: 1 key\(s\) have no place in the Detectron2 model: res6.0.conv1.weight"
    ):
        place_weights(dict(weights, **{"res6.0.conv1.weight": np.zeros(1)}), model_state, "r18.pkl")
    with pytest.raises(
        InputError, match=r"stem.conv1.weight has shape \(1,\), the model's backbone.stem.conv1.weight"
    ):
        place_weights(dict(weights, **{"stem.conv1.weight": np.zeros(1)}), model_state, "r18.pkl")


def test_converter_errors_are_one_line(tmp_path):
    mobile = save_student(tmp_path / "m.pt", "mobilenetv3_small_050")
    with pytest.raises(InputError, match="holds a mobilenetv3_small_050: convert handles resnet18"):
        convert_checkpoint(mobile, tmp_path / "m.pkl")
    with pytest.raises(InputError, match=r"name the output \*\.pkl"):
        convert_checkpoint(mobile, tmp_path / "m.pth")
    state = dict(build_backbone("resnet18").state_dict(), **{"fc.weight": torch.zeros(2, 512)})
    with pytest.raises(InputError, match="1 key\\(s\\) have no Detectron2 ResNet name: fc.weight"):
        resnet_to_detectron2(state, "r18")


def test_cli_convert(tmp_path, capsys):
    ckpt = save_student(tmp_path / "r18.pt", "resnet18")
    assert main(["convert", "--to", "detectron2", ckpt, str(tmp_path / "out.pkl")]) == 0
    assert "converted 120 resnet18 keys for detectron2" in capsys.readouterr().out
    assert isinstance(read_detectron2_weights(tmp_path / "out.pkl")["res5.1.conv2.weight"], np.ndarray)
    assert main(["convert", "--to", "detectron2", str(tmp_path / "missing.pt"), str(tmp_path / "x.pkl")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
