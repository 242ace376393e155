"""The dry-run cost model: its calibration, its FLOP table, and how it scales."""

from __future__ import annotations

import pytest

from disco_bench import cost
from downstream.config import EvalConfig


def test_calibration_reproduces_the_measured_moco_run():
    """MoCo-v2 R-50, 200 epochs of ImageNet: 53 h on 8 V100s = 424 GPU-hours."""
    c = cost.pretrain_cost("moco", "resnet50", None, cost.DATASET_IMAGES["imagenet"], 200, 224)
    assert c.gpu_hours == pytest.approx(424, rel=0.01)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_flop_table_matches_a_fresh_count(arch):
    assert cost.count_gmacs(arch) == pytest.approx(cost.BACKBONE_GMACS_224[arch], rel=0.01)


def test_hand_computed_pretrain_cost():
    # DisCo: 2 trained student passes (x3) + 1 momentum pass + 2 teacher passes, per image
    per_image = 2e9 * (7 * 1.814 + 2 * 4.087)
    expected = 1000 * 10 * per_image / cost.ASSUMED_FLOP_PER_GPU_SECOND / 3600
    assert cost.pretrain_cost("disco", "resnet18", "resnet50", 1000, 10, 224).gpu_hours == pytest.approx(expected)


def test_scaling_with_images_epochs_size_and_method():
    base = cost.pretrain_cost("moco", "resnet18", None, 1000, 10, 224).gpu_hours
    assert cost.pretrain_cost("moco", "resnet18", None, 2000, 10, 224).gpu_hours == pytest.approx(2 * base)
    assert cost.pretrain_cost("moco", "resnet18", None, 1000, 20, 224).gpu_hours == pytest.approx(2 * base)
    assert cost.pretrain_cost("moco", "resnet18", None, 1000, 10, 112).gpu_hours == pytest.approx(base / 4)
    assert cost.pretrain_cost("disco", "resnet18", "resnet50", 1000, 10, 224).gpu_hours > base
    unknown = cost.pretrain_cost("newmethod", "resnet18", "resnet50", 1000, 10, 224)
    assert "costed like disco" in unknown.basis


def test_probe_protocols_and_tasks():
    paper = cost.eval_cost("linear", EvalConfig(protocol="paper", epochs=100), "resnet18", 1000)
    fast = cost.eval_cost("linear", EvalConfig(protocol="fast"), "resnet18", 1000)
    assert paper.gpu_hours == pytest.approx(100 * fast.gpu_hours)
    semi = cost.eval_cost("semisup", EvalConfig(subset_fraction=0.1), "resnet18", 1000)
    assert semi.gpu_hours == pytest.approx(paper.gpu_hours / 10)
    two = cost.eval_cost("tsne", EvalConfig(ckpts=["a", "b"]), "resnet18", None)
    one = cost.eval_cost("tsne", EvalConfig(), "resnet18", None)
    assert two.gpu_hours == pytest.approx(2 * one.gpu_hours)
    assert cost.eval_cost("linear", EvalConfig(), None, 1000).gpu_hours is None
    assert cost.eval_cost("segmentation", EvalConfig(), "resnet18", 1000).text().startswith("? GPU-h")


def test_dataset_images():
    assert cost.dataset_images({"generate": {"classes": 10, "train_per_class": 60}}, "embedded") == 600
    assert cost.dataset_images({"kind": "imagefolder"}, "imagenet") == 1_281_167
    assert cost.dataset_images({"kind": "imagefolder"}, "mystery") is None


def test_detection_cost_follows_the_paper_voc_schedule_and_trials():
    from disco_bench.cost import detection_cost
    from downstream.config import EvalConfig

    cfg = EvalConfig(det_dataset="voc", det_trials=5)
    # 48k iterations x batch 32 x 5 trials x 3 passes x 2 x 1.814 GMACs x (600/224)^2 x 4/3, at 5.5e12 FLOP/s
    flops = 48_000 * 32 * 5 * 3 * 2e9 * 1.814 * (600 / 224) ** 2 * 4 / 3
    assert detection_cost("resnet18", cfg).gpu_hours == pytest.approx(flops / 5.5e12 / 3600, rel=1e-9)
    short = EvalConfig(det_dataset="voc", det_max_iter=480)
    assert detection_cost("resnet18", short).gpu_hours == pytest.approx(flops / 5 / 100 / 5.5e12 / 3600, rel=1e-9)
