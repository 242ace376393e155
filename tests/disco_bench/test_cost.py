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


# --- CPU time, counted folders, the long-run note ----------------------------------------------


def test_cpu_hours_by_hand():
    # 1 GPU-hour = 5.5e12 x 3600 FLOP; on 2 cores at 4.8e10 FLOP/s each: 1.98e16 / 9.6e10 = 206,250 s
    assert cost.Cost(1.0, "").cpu_hours(2) == pytest.approx(206_250 / 3600)
    assert cost.Cost(None, "").cpu_hours(2) is None


@pytest.mark.parametrize(
    "seconds, text", [(45, "45 s"), (600, "10 min"), (3 * 3600 + 1800, "3.5 h"), (3 * 86400, "3.0 days")]
)
def test_durations_read_in_the_unit_a_reader_thinks_in(seconds, text):
    assert cost.duration(seconds) == text


def test_an_existing_imagefolder_is_counted(tiny_imagefolder):
    # 3 classes x 8 train images (conftest); val/ is not trained on
    assert cost.folder_images("imagefolder", tiny_imagefolder) == 24
    assert cost.dataset_images({"kind": "imagefolder"}, "mystery", tiny_imagefolder) == 24
    assert cost.dataset_images({"kind": "imagefolder"}, "mystery", tiny_imagefolder / "nowhere") is None


def test_cifar_pickles_are_counted_by_their_rows(tmp_path):
    from disco_bench.embedded_cifar import EmbeddedCifarConfig, make_embedded_cifar

    make_embedded_cifar(tmp_path, EmbeddedCifarConfig(classes=3, train_per_class=10, test_per_class=4))
    assert cost.folder_images("cifar", tmp_path) == 30


def test_voc_and_coco_training_lists_are_counted(tmp_path):
    import json

    for year, names in (("VOC2007", "a b c"), ("VOC2012", "d e")):
        lists = tmp_path / "voc" / "VOCdevkit" / year / "ImageSets" / "Main"
        lists.mkdir(parents=True)
        (lists / "trainval.txt").write_text(names.replace(" ", "\n") + "\n")
    assert cost.folder_images("voc", tmp_path / "voc") == 5
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir(parents=True)
    (ann / "instances_train2017.json").write_text(json.dumps({"images": [{"id": i} for i in range(7)]}))
    assert cost.folder_images("coco", tmp_path / "coco") == 7


def test_a_dry_run_step_on_a_folder_it_can_see_has_an_estimate(tiny_imagefolder):
    from disco_bench.listing import step_cost
    from disco_bench.suite import Step, Suite
    from pretrain.config import PretrainConfig

    suite = Suite(
        name="mine",
        description="",
        path=None,
        datasets={"mine": {"kind": "imagefolder"}},
        defaults={},
        steps=[],
    )
    step = Step(id="moco", kind="pretrain", params={"data": "mine"})
    cfg = PretrainConfig(method="moco", student="resnet18", epochs=10, image_size=224)
    assert step_cost(step, cfg, suite, {}).gpu_hours is None  # no folder given: the name is unknown
    seen = step_cost(step, cfg, suite, {}, {"mine": tiny_imagefolder})
    # 24 images x 10 epochs x (3 + 1) x 3.628 GFLOP = 3.4829e12 FLOP / 5.5e12 = 0.63325 s
    assert seen.gpu_hours == pytest.approx(0.63325 / 3600, rel=1e-4)
    assert "CPU core" in seen.text()


def test_a_long_eval_names_its_estimate_and_the_quick_flag(tiny_imagefolder):
    # paper protocol, 24 images, resnet18 at 224 px: 3.628 GFLOP per image and epoch; 10,000,000
    # epochs = 8.707e17 FLOP, 158,305 GPU-s (44 h) -- long; fast: one pass, 0.0158 s
    cfg = EvalConfig(data=str(tiny_imagefolder), protocol="paper", epochs=10_000_000)
    note = cost.eval_note("linear", cfg, "resnet18", on_gpu=True)
    assert note.startswith("note: eval linear is estimated at ~44.0 h on one GPU (24 img x 10000000 passes")
    assert note.endswith("--protocol fast takes ~0 s")
    assert (
        cost.eval_note("linear", EvalConfig(data=str(tiny_imagefolder), epochs=10), "resnet18", True) is None
    )


def test_a_long_detection_names_a_max_iter_that_fits(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "instances_train2017.json").write_text('{"images": [{"id": 1}]}')
    cfg = EvalConfig(data=str(tmp_path), det_dataset="coco").for_device(on_gpu=False)
    note = cost.eval_note("detection", cfg, "resnet18", on_gpu=False)
    assert "180,000 it x 4 img" in note and "--max-iter" in note


def test_a_long_pretraining_names_the_epochs_that_fit(tiny_imagefolder):
    from pretrain.config import PretrainConfig

    cfg = PretrainConfig(method="moco", student="resnet18", data=str(tiny_imagefolder), epochs=100_000)
    # per epoch on one GPU: 24 img x 4 passes x 3.628 GFLOP = 348.3 GFLOP / 5.5e12 = 0.06332 s;
    # 300 s / 0.06332 = 4,737 epochs
    note = cost.pretrain_note(cfg, on_gpu=True)
    assert note.startswith("note: pretrain moco resnet18 is estimated at ~1.8 h on one GPU")
    assert "--epochs 4737 takes ~5 min" in note
    capped = PretrainConfig(
        method="moco", student="resnet18", data=str(tiny_imagefolder), epochs=100_000, max_steps=8
    )
    assert cost.pretrain_note(capped, on_gpu=True) is None  # 8 steps of a 100,000-epoch run: short


def test_a_suite_past_ten_minutes_says_so_before_it_starts(tmp_path, monkeypatch):
    from disco_bench.listing import suite_note
    from disco_bench.planning import build_context, plan, restrict
    from disco_bench.suite import load_suite

    monkeypatch.setattr(cost, "available_cores", lambda: 2)

    def note(name: str) -> str | None:
        suite = restrict(load_suite(name), None)
        ctx = build_context(suite, tmp_path / name, None, {}, progress=False, create=False)
        return suite_note(suite, ctx, plan(suite, ctx), on_gpu=False)

    assert note("smoke") is None  # minutes on 2 cores
    long = note("cpu")
    assert (
        long.startswith("note: suite cpu is estimated at ~")
        and f"on 2 CPU cores ({len(load_suite('cpu').steps)} steps to run)" in long
    )
    assert long.endswith("--only PATTERN runs a part, --set eval.protocol=fast the fast probes")
