"""Detectron2 side: converted weights on the C4 model, the effective config (RGB mean/std,
STRIDE_IN_1X1), MoCo's Res5ROIHeadsExtraNorm head of basic blocks, and the dataset dicts for every
COCO mask form. Needs detectron2 (scripts/install_detectron2.sh); never skipped in CI. The converter
alone is tested without Detectron2 in test_detection_convert.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from downstream.config import EvalConfig
from downstream.detection.convert import convert_checkpoint, resnet_to_detectron2
from downstream.detection.data import read_train_test
from downstream.detection.schedule import effective_schedule
from pretrain.models import build_backbone
from tests.downstream.detection_helpers import require_detectron2, write_foreign_coco
from tests.pretrain.helpers import save_student

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
        elif k.startswith("roi_heads.res5.") and not k.startswith(
            "roi_heads.res5.norm."
        ):  # MoCo's extra norm: fresh
            out[k.removeprefix("roi_heads.")] = v
    return out


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
    ckpt = save_student(tmp_path / "r18.pt", "resnet18", seed=3)
    out = tmp_path / "r18.pkl"
    convert_checkpoint(ckpt, out)
    _, model = _model(d2, "resnet18")
    fresh = d2.load_converted(model, out)
    # only the heads and MoCo's extra res5 norm start fresh
    assert "roi_heads.res5.norm" in fresh
    assert not [
        k
        for k in fresh
        if k.startswith("backbone.") or (k.startswith("roi_heads.res5.") and k != "roi_heads.res5.norm")
    ]
    assert {k.split(".")[1] for k in fresh if k.startswith("roi_heads.")} >= {"box_predictor", "mask_head"}
    src = torch.load(ckpt, weights_only=True)["encoder"]["backbone"]
    own = model.state_dict()
    for theirs, ours in (
        ("layer1.0.conv1.weight", "backbone.res2.0.conv1.weight"),
        ("bn1.running_mean", "backbone.stem.conv1.norm.running_mean"),
        ("layer4.1.conv2.weight", "roi_heads.res5.1.conv2.weight"),
        ("layer4.0.downsample.1.weight", "roi_heads.res5.0.shortcut.norm.weight"),
    ):
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
    cfg = d2.build_config(
        EvalConfig(det_dataset="voc", device="cpu"),
        "resnet50",
        20,
        False,
        effective_schedule(EvalConfig(det_dataset="voc")),
        seed=0,
    )
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS) == (
        48000,
        0.1,
        32,
        200,
    )
    assert tuple(cfg.SOLVER.STEPS) == (18000, 22200)
    assert (tuple(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, cfg.INPUT.MIN_SIZE_TEST) == (
        (400, 800),
        "range",
        800,
    )
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm" and cfg.MODEL.RESNETS.OUT_FEATURES == ["res4"]
    assert (
        cfg.MODEL.RESNETS.NORM == "BN" and cfg.TEST.PRECISE_BN.ENABLED and cfg.TEST.PRECISE_BN.NUM_ITER == 200
    )


@pytest.mark.parametrize("arch,blocks", [("resnet18", 2), ("resnet34", 3)])
def test_res5_head_of_basic_blocks_for_resnet18_34(d2, arch, blocks):
    from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

    _, model = _model(d2, arch)
    res5 = model.roi_heads.res5
    assert len(res5) == blocks + 1 and all(isinstance(b, BasicBlock) for b in res5[:-1])
    assert res5[0].conv1.in_channels == 256 and res5[-2].out_channels == 512
    _, r50 = _model(d2, "resnet50")
    assert all(isinstance(b, BottleneckBlock) for b in r50.roi_heads.res5[:-1])


def test_c4_head_is_mocos_res5_extra_norm_and_the_previous_head_is_an_option(d2):
    _, model = _model(d2, "resnet18")
    assert type(model.roi_heads).__name__ == "Res5ROIHeadsExtraNorm"
    norm = model.roi_heads.res5.norm  # named as in MoCo's detection code: roi_heads.res5.norm.*
    assert isinstance(norm, torch.nn.BatchNorm2d) and norm.num_features == 512
    x = torch.randn(2, 256, 8, 8)
    model.roi_heads.res5.train()
    out = model.roi_heads.res5(x)  # the extra BN normalises res5's output: per-channel mean 0, std 1
    assert (
        out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
        and (out.std(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-3
    )
    import dataclasses

    cfg = d2.build_config(
        dataclasses.replace(SHORT, det_head="res5"), "resnet18", 3, True, effective_schedule(SHORT), 0
    )
    assert cfg.MODEL.ROI_HEADS.NAME == "BasicBlockRes5ROIHeads"
    from detectron2.modeling import build_model

    assert not hasattr(build_model(cfg).roi_heads.res5, "norm")


def test_every_coco_mask_form_becomes_a_detectron2_instance(d2, tmp_path):
    from detectron2.data import DatasetMapper

    write_foreign_coco(tmp_path, train_images=4, val_images=1)
    train, _ = read_train_test("coco", tmp_path)
    assert d2.mask_format(train) == "bitmask"  # RLE present: polygons alone would fail
    cfg = d2.build_config(SHORT, "resnet18", 3, True, effective_schedule(SHORT), 0, mask_format="bitmask")
    mapper = DatasetMapper(cfg, is_train=True)
    dicts = d2.dataset_dicts(train, True, "bitmask")
    crowd = [a for d in dicts for a in d["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(
        crowd[0]["segmentation"]["counts"], bytes
    )  # uncompressed -> compressed
    for d, img in zip(dicts, train.images):
        inst = mapper(dict(d))["instances"]
        kept = [a for a in img.annotations if not a.crowd]  # crowd regions are left out of training
        assert len(inst) == len(kept)
        if kept:
            assert inst.gt_masks.tensor.sum() > 0
            assert inst.gt_classes.tolist() == [a.category for a in kept]


def test_mobilenet_plugs_in_as_timm_fpn_backbone(d2):
    cfg, model = _model(d2, "mobilenetv3_small_050")
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone"
    assert sorted(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    out = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [out[k].shape[-1] for k in ("p2", "p3", "p4", "p5", "p6")] == [16, 8, 4, 2, 1]


def test_a_non_finite_loss_names_the_iteration_and_every_loss_term(d2):
    # the message Detectron2's trainer raises (numpy 2 prints its floats as np.float64(...))
    terms = {
        "loss_cls": np.float64("nan"),
        "loss_box_reg": np.float64(1.5),
        "loss_rpn_cls": np.float64("inf"),
    }
    exc = FloatingPointError(f"Loss became infinite or NaN at iteration=6!\nloss_dict = {terms}")
    it, parsed = d2._nonfinite_step(exc, SimpleNamespace(iter=6))
    assert it == 7 and list(parsed) == list(terms)
    assert (
        np.isnan(parsed["loss_cls"])
        and parsed["loss_box_reg"] == 1.5
        and parsed["loss_rpn_cls"] == float("inf")
    )


def test_frozen_norm_keeps_a_timm_students_function(d2, tmp_path):
    """det_norm=frozen on the timm path: the student's checkpoint loaded, its BatchNormAct2d layers
    frozen with their activation kept, so the frozen body computes what the loaded one did."""
    import dataclasses

    cfg, model = _model(d2, "mobilenetv3_small_050")
    ckpt = save_student(tmp_path / "s.pt", "mobilenetv3_small_050")
    ev = dataclasses.replace(SHORT, ckpt=str(ckpt), det_norm="bn")
    d2._load_timm(model, ev)
    body = model.backbone.bottom_up.body.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = [t.clone() for t in body(x)]
        d2._load_timm(model, dataclasses.replace(ev, det_norm="frozen"))
        frozen = model.backbone.bottom_up.body.eval()
        after = frozen(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
