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


# The figures below were worked out by hand from the model's stated rule (module docstring), with
# 2 x GMACs per forward: resnet18 3.628, resnet50 8.174, efficientnet_b0 0.770 GFLOP at 224 px, and
# 5.5e12 FLOP per GPU-second.


def test_disco_pretrain_cost_by_hand():
    # per image: 2 trained student passes x 3 + 1 momentum pass = 7 x 3.628 = 25.396 GFLOP,
    # plus 2 teacher passes x 8.174 = 16.348 GFLOP: 41.744 GFLOP. 1,000 images x 10 epochs:
    # 4.1744e14 FLOP / 5.5e12 = 75.898 s = 0.021083 GPU-hours
    c = cost.pretrain_cost("disco", "resnet18", "resnet50", 1000, 10, 224)
    assert c.gpu_hours == pytest.approx(0.021083, rel=1e-4)
    assert c.basis == "1,000 img x 10 ep x 41.7 GFLOP"


def test_seed_pretrain_cost_on_imagenet_by_hand():
    # one view: 1 trained pass x 3 x 0.770 = 2.310 GFLOP + 1 teacher pass 8.174 = 10.484 GFLOP per image;
    # 1,281,167 images x 200 epochs x 10.484 GFLOP = 2.6864e18 FLOP / 5.5e12 = 488,427 s = 135.67 GPU-hours
    assert cost.pretrain_cost(
        "seed", "efficientnet_b0", "resnet50", 1_281_167, 200, 224
    ).gpu_hours == pytest.approx(135.67, rel=1e-4)


def test_paper_linear_probe_cost_on_imagenet_by_hand():
    # frozen backbone, 100 epochs of 1,281,167 images x 3.628 GFLOP = 4.6481e17 FLOP / 5.5e12 = 84,510 s
    paper = cost.eval_cost("linear", EvalConfig(protocol="paper", epochs=100), "resnet18", 1_281_167)
    assert paper.gpu_hours == pytest.approx(23.475, rel=1e-4)


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

    # VOC: 48,000 iterations x 32 images x 5 trials = 7.68e6 images at the mean short side 600 px
    # (train 400-800) on a 4:3 image: 3 passes x 3.628 GFLOP x (600 / 224)^2 = 7.1747 x 4/3 = 104.12
    # GFLOP per image; 7.9964e17 FLOP / 5.5e12 = 145,389 s = 40.386 GPU-hours
    full = detection_cost("resnet18", EvalConfig(det_dataset="voc", det_trials=5))
    assert full.gpu_hours == pytest.approx(40.386, rel=1e-4)
    assert full.basis.startswith("48,000 it x 32 img x 5 trial(s) x 104 GFLOP")
    # 480 iterations, one trial: 1/500 of that
    short = detection_cost("resnet18", EvalConfig(det_dataset="voc", det_max_iter=480))
    assert short.gpu_hours == pytest.approx(0.080772, rel=1e-4)
