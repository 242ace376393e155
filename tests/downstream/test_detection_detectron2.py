"""Detectron2 side: the converter, the effective config (RGB mean/std, STRIDE_IN_1X1) and the res5 head
of basic blocks. Needs detectron2 (scripts/install_detectron2.sh); never skipped in CI."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from downstream.config import EvalConfig
from downstream.detection.convert import convert_checkpoint, detectron2_key, resnet_to_detectron2
from downstream.detection.schedule import effective_schedule
from pretrain.errors import InputError
from pretrain.models import build_backbone
from tests.downstream.detection_helpers import require_detectron2, save_student

SHORT = EvalConfig(det_dataset="coco", det_max_iter=10, det_image_size=64, device="cpu")


@pytest.fixture(scope="module")
def d2():
    require_detectron2()
    from downstream.detection import detectron2_backend

    return detectron2_backend


def _model(d2, arch: str, masks: bool = True):
    from detectron2.modeling import build_model

    cfg = d2.build_config(SHORT, arch, num_classes=3, masks=masks, schedule=effective_schedule(SHORT), seed=0)
    return cfg, build_model(cfg)


def _d2_backbone_state(model) -> dict[str, torch.Tensor]:
    """The model's backbone + res5 weights under the converter's names (prefixes removed)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            out[k.removeprefix("backbone.")] = v
        elif k.startswith("roi_heads.res5."):
            out[k.removeprefix("roi_heads.")] = v
    return out


def test_key_names_by_hand():
    assert detectron2_key("conv1.weight") == "stem.conv1.weight"
    assert detectron2_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_key("layer1.0.bn2.weight") == "res2.0.conv2.norm.weight"
    assert detectron2_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert detectron2_key("layer3.5.downsample.1.running_mean") == "res4.5.shortcut.norm.running_mean"
    assert detectron2_key("layer2.1.conv3.weight") == "res3.1.conv3.weight"
    assert detectron2_key("fc.weight") is None and detectron2_key("layer5.0.conv1.weight") is None


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_every_key_maps_onto_the_c4_model_with_matching_shapes(d2, arch):
    state = build_backbone(arch).state_dict()
    converted = resnet_to_detectron2(state, arch)
    assert len(converted) == len(state)  # nothing dropped, nothing merged
    _, model = _model(d2, arch)
    target = _d2_backbone_state(model)
    assert set(converted) == set(target)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in target.items()}


def test_converted_resnet18_loads_with_no_missing_backbone_keys(d2, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    ckpt = save_student(tmp_path / "r18.pt", "resnet18", seed=3)
    out = tmp_path / "r18.pkl"
    summary = convert_checkpoint(ckpt, out)
    assert summary["keys"] == len(build_backbone("resnet18").state_dict())
    with open(out, "rb") as handle:
        payload = pickle.load(handle)
    assert payload["matching_heuristics"] is True and payload["arch"] == "resnet18"
    _, model = _model(d2, "resnet18")
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(out)))
    assert not [k for k in incompatible.missing_keys if k.startswith(("backbone.", "roi_heads.res5."))]
    assert not incompatible.unexpected_keys
    src = torch.load(ckpt, weights_only=True)["encoder"]["backbone"]
    own = model.state_dict()
    for theirs, ours in (("layer1.0.conv1.weight", "backbone.res2.0.conv1.weight"),
                         ("bn1.running_mean", "backbone.stem.conv1.norm.running_mean"),
                         ("layer4.1.conv2.weight", "roi_heads.res5.1.conv2.weight"),
                         ("layer4.0.downsample.1.weight", "roi_heads.res5.0.shortcut.norm.weight")):
        assert torch.equal(own[ours], src[theirs]), ours


def test_effective_config_has_rgb_mean_std_and_stride_in_3x3(d2):
    from detectron2.config import CfgNode

    cfg, model = _model(d2, "resnet34", masks=False)
    for node in (cfg, CfgNode.load_cfg(cfg.dump())):  # also after a YAML round trip
        assert node.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
        assert node.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
        assert node.INPUT.FORMAT == "RGB"
        assert node.MODEL.RESNETS.STRIDE_IN_1X1 is False
        assert node.MODEL.BACKBONE.FREEZE_AT == 0
    assert model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.280, 103.530])
    assert model.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.120, 57.375])
    # STRIDE_IN_1X1 False puts the stride in the 3x3 conv (torchvision's layout)
    assert model.roi_heads.res5[0].conv1.stride == (2, 2)


def test_paper_schedule_is_the_default_detectron2_config(d2):
    cfg = d2.build_config(EvalConfig(det_dataset="voc", device="cpu"), "resnet50", 20, False,
                          effective_schedule(EvalConfig(det_dataset="voc")), seed=0)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS) == (48000, 0.1, 32, 200)
    assert tuple(cfg.SOLVER.STEPS) == (18000, 22200)
    assert (tuple(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, cfg.INPUT.MIN_SIZE_TEST) == ((400, 800), "range", 800)
    assert cfg.MODEL.ROI_HEADS.NAME == "BasicBlockRes5ROIHeads" and cfg.MODEL.RESNETS.OUT_FEATURES == ["res4"]


@pytest.mark.parametrize("arch,blocks", [("resnet18", 2), ("resnet34", 3)])
def test_res5_head_of_basic_blocks_for_resnet18_34(d2, arch, blocks):
    from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

    _, model = _model(d2, arch)
    res5 = model.roi_heads.res5
    assert len(res5) == blocks and all(isinstance(b, BasicBlock) for b in res5)
    assert res5[0].conv1.in_channels == 256 and res5[-1].out_channels == 512
    _, r50 = _model(d2, "resnet50")
    assert all(isinstance(b, BottleneckBlock) for b in r50.roi_heads.res5)


def test_mobilenet_plugs_in_as_timm_fpn_backbone(d2):
    cfg, model = _model(d2, "mobilenetv3_small_050")
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone"
    assert sorted(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    out = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [out[k].shape[-1] for k in ("p2", "p3", "p4", "p5", "p6")] == [16, 8, 4, 2, 1]


def test_converter_errors_are_one_line(d2, tmp_path):
    mobile = save_student(tmp_path / "m.pt", "mobilenetv3_small_050")
    with pytest.raises(InputError, match="holds a mobilenetv3_small_050: convert handles resnet18"):
        convert_checkpoint(mobile, tmp_path / "m.pkl")
    with pytest.raises(InputError, match=r"name the output \*\.pkl"):
        convert_checkpoint(mobile, tmp_path / "m.pth")
    state = dict(build_backbone("resnet18").state_dict(), **{"fc.weight": torch.zeros(2, 512)})
    with pytest.raises(InputError, match="1 key\\(s\\) have no Detectron2 ResNet name: fc.weight"):
        resnet_to_detectron2(state, "r18")


def test_cli_convert(d2, tmp_path, capsys):
    from disco_bench.cli import main

    ckpt = save_student(tmp_path / "r18.pt", "resnet18")
    assert main(["convert", "--to", "detectron2", ckpt, str(tmp_path / "out.pkl")]) == 0
    assert "converted 120 resnet18 keys for detectron2" in capsys.readouterr().out
    with open(tmp_path / "out.pkl", "rb") as handle:
        model = pickle.load(handle)["model"]
    assert isinstance(model["res5.1.conv2.weight"], np.ndarray)
    assert main(["convert", "--to", "detectron2", str(tmp_path / "missing.pt"), str(tmp_path / "x.pkl")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
