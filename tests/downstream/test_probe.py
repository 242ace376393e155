"""The shared probe: MoCo's backbone check, the paper protocol's resume (and its config key),
DDP equivalence, and the fast protocol against scikit-learn."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import downstream.probe as probe
from disco_bench.embedded import EmbeddedConfig, make_embedded
from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.features import extract_features, make_runtime
from downstream.linear import image_folder_probe_data
from downstream.probe import (
    BackboneChanged,
    ProbeData,
    backbone_snapshot,
    can_stratify,
    check_backbone_unchanged,
    fast_probe,
    fit_logistic_lbfgs,
    paper_probe,
)
from pretrain.models import build_backbone

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("single_thread")


# --- MoCo's sanity check --------------------------------------------------------------------


def test_backbone_check_passes_when_untouched():
    net = build_backbone("resnet10t")
    snap = backbone_snapshot(net)
    net.eval()(torch.randn(2, 3, 16, 16))
    check_backbone_unchanged(net, snap)


def test_backbone_check_names_a_changed_weight():
    net = build_backbone("resnet10t")
    snap = backbone_snapshot(net)
    with torch.no_grad():
        net.conv1[0].weight[0, 0, 0, 0] += 1e-4
    with pytest.raises(BackboneChanged, match=r"conv1\.0\.weight"):
        check_backbone_unchanged(net, snap)


def test_backbone_check_catches_batchnorm_statistics_moving():
    net = build_backbone("resnet10t")
    snap = backbone_snapshot(net)
    net.train()(torch.randn(4, 3, 16, 16))  # train-mode BN updates running_mean/var: not frozen
    with pytest.raises(BackboneChanged, match="running_mean|running_var|num_batches_tracked"):
        check_backbone_unchanged(net, snap)


def test_paper_probe_fails_when_backbone_changes_during_training(eval_cfg, monkeypatch):
    backbone, _ = load_backbone(eval_cfg.ckpt)
    data = image_folder_probe_data(eval_cfg.data, 16)
    real = probe.backbone_features

    def tampering(net, images, rt):  # a bug that updates the backbone while probing
        with torch.no_grad():
            next(net.parameters()).add_(1.0)
        return real(net, images, rt)

    monkeypatch.setattr(probe, "backbone_features", tampering)
    with pytest.raises(BackboneChanged):
        paper_probe(
            backbone, data, dataclasses.replace(eval_cfg, protocol="paper", epochs=1), lr=0.1, progress=False
        )


# --- paper protocol: resume keyed to the configuration ---------------------------------------


def _paper_head(cfg: EvalConfig) -> dict:
    backbone, _ = load_backbone(cfg.ckpt)
    paper_probe(backbone, image_folder_probe_data(cfg.data, cfg.image_size), cfg, lr=0.5, progress=False)
    return probe.safe_load(Path(cfg.out) / "probe_last.pt")["head"]


def test_resume_after_interruption_gives_the_uninterrupted_head(eval_cfg, tmp_path, monkeypatch):
    cfg = dataclasses.replace(eval_cfg, protocol="paper", epochs=2, out=str(tmp_path / "straight"))
    straight = _paper_head(cfg)

    cfg = dataclasses.replace(cfg, out=str(tmp_path / "interrupted"))
    real_save = probe.atomic_torch_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(probe, "atomic_torch_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _paper_head(cfg)
    monkeypatch.setattr(probe, "atomic_torch_save", real_save)
    resumed = _paper_head(cfg)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_a_different_config_never_resumes_a_stale_head(eval_cfg, tmp_path, capsys):
    shared = str(tmp_path / "shared")
    _paper_head(dataclasses.replace(eval_cfg, protocol="paper", epochs=1, out=shared))
    other = dataclasses.replace(eval_cfg, protocol="paper", epochs=1, seed=1)
    fresh = _paper_head(dataclasses.replace(other, out=str(tmp_path / "fresh")))
    reused_dir = _paper_head(dataclasses.replace(other, out=shared))
    assert "another configuration" in capsys.readouterr().err
    for key in fresh:
        assert torch.equal(fresh[key], reused_dir[key]), key


def test_resume_key_ignores_runtime_fields_but_not_protocol_fields(eval_cfg):
    data = image_folder_probe_data(eval_cfg.data, 16)
    key = probe.resume_key(eval_cfg, 0.5, data, "abc")
    assert (
        probe.resume_key(dataclasses.replace(eval_cfg, workers=3, feature_batch_size=7), 0.5, data, "abc")
        == key
    )
    assert probe.resume_key(dataclasses.replace(eval_cfg, weight_decay=1e-4), 0.5, data, "abc") != key
    assert probe.resume_key(eval_cfg, 0.5, data, "other backbone") != key


# --- DDP: two processes over gloo give the single-process head ------------------------------

DDP_SCRIPT = """
import sys, torch
from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.linear import image_folder_probe_data
from downstream.probe import ProbeData, paper_probe
data_root, ckpt, out = sys.argv[1:4]
full = image_folder_probe_data(data_root, 16)
data = ProbeData(full.train_plain, full.train_plain, full.val, full.num_classes)  # no random augmentation
cfg = EvalConfig(ckpt=ckpt, data=data_root, out=out, protocol="paper", epochs=2, image_size=16, batch_size=8, device="cpu")
acc, details = paper_probe(load_backbone(ckpt)[0], data, cfg, lr=0.5, progress=False)
torch.save({"acc": acc, "world_size": details["world_size"]}, f"{out}/acc_{torch.distributed.get_rank()}.pt")
"""


@pytest.mark.slow
def test_ddp_two_processes_match_one(encoder_ckpt, tiny_imagefolder, tmp_path):
    script = tmp_path / "ddp_probe.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tiny_imagefolder),
        encoder_ckpt,
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]

    full = image_folder_probe_data(str(tiny_imagefolder), 16)
    data = ProbeData(full.train_plain, full.train_plain, full.val, full.num_classes)
    cfg = EvalConfig(
        ckpt=encoder_ckpt,
        data=str(tiny_imagefolder),
        out=str(tmp_path / "single"),
        protocol="paper",
        epochs=2,
        image_size=16,
        batch_size=8,
        device="cpu",
    )
    acc, details = paper_probe(load_backbone(encoder_ckpt)[0], data, cfg, lr=0.5, progress=False)

    ranks = [torch.load(out / f"acc_{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and details["world_size"] == 1
    assert ranks[0]["acc"] == ranks[1]["acc"] == pytest.approx(acc)
    ddp_head = torch.load(out / "probe_last.pt")["head"]
    one_head = torch.load(tmp_path / "single" / "probe_last.pt")["head"]
    for key in one_head:
        torch.testing.assert_close(ddp_head[key], one_head[key], rtol=1e-4, atol=1e-6)


# --- fast protocol against scikit-learn ------------------------------------------------------


@pytest.fixture(scope="module")
def cached_features(tmp_path_factory, encoder_ckpt):
    """Features of a random resnet10t on 4 embedded classes (40 train, 100 val each: 0.25-point resolution)."""
    root = make_embedded(
        tmp_path_factory.mktemp("feat") / "e",
        EmbeddedConfig(classes=4, train_per_class=40, val_per_class=100, image_size=16),
        progress=False,
    )
    data = image_folder_probe_data(str(root), 16)
    backbone, _ = load_backbone(encoder_ckpt)
    rt = make_runtime("cpu")
    train = extract_features(backbone, data.train_plain, 256, rt, progress=False)
    val = extract_features(backbone, data.val, 256, rt, progress=False)
    return train, val


def _standardise(train, val):
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (val - mean) / std


def test_lbfgs_solves_the_same_problem_as_sklearn(cached_features):
    (xtr, ytr), (xva, yva) = cached_features
    xtr, xva = _standardise(xtr, xva)
    wd = 1e-2  # ours: mean CE + wd/2 ||W||^2  ==  sklearn: C * sum CE + 1/2 ||W||^2  with C = 1 / (wd * N)
    head = fit_logistic_lbfgs(xtr, ytr, 4, wd, max_iter=500)
    sk = LogisticRegression(C=1.0 / (wd * len(ytr)), max_iter=5000, tol=1e-8).fit(xtr.numpy(), ytr.numpy())
    with torch.no_grad():
        ours = head(xva).argmax(1).numpy()
    theirs = sk.predict(xva.numpy())
    assert abs((ours == yva.numpy()).mean() - (theirs == yva.numpy()).mean()) * 100 <= 1.0
    np.testing.assert_allclose(
        head.weight.detach().numpy() - head.weight.detach().numpy().mean(0),
        sk.coef_ - sk.coef_.mean(0),
        atol=2e-3,
    )


def test_fast_probe_reaches_sklearn_accuracy_within_a_point(cached_features):
    train, val = cached_features
    acc, details = fast_probe(train, val, 4, EvalConfig(fast_max_iter=200))
    xtr, xva = _standardise(train[0], val[0])
    sk = LogisticRegression(max_iter=5000).fit(xtr.numpy(), train[1].numpy())
    sk_top1 = 100.0 * (sk.predict(xva.numpy()) == val[1].numpy()).mean()
    assert acc[1] >= sk_top1 - 1.0, (acc, sk_top1, details)
    assert details["chosen_weight_decay"] in EvalConfig().fast_weight_decays


def test_holdout_is_stratified_only_where_sklearn_can():
    assert can_stratify(torch.tensor([0, 0, 1, 1, 2, 2] * 5), 0.2)  # 30 images: 6 held out >= 3 classes
    assert not can_stratify(torch.tensor([0, 0, 1, 1, 2, 2]), 0.2)  # 2 held out < 3 classes
    assert can_stratify(torch.tensor([0, 1, 1, 1, 1, 1] * 2), 0.5)  # 6 and 6 images hold both classes
    assert not can_stratify(torch.tensor([0, 1, 1, 1, 1]), 0.5)  # class 0 has a single image


def test_unknown_protocol_is_a_one_line_error(eval_cfg):
    from infra.errors import InputError

    with pytest.raises(InputError, match="protocol='slow': expected one of paper, fast"):
        probe.linear_probe(
            build_backbone("resnet10t"), None, dataclasses.replace(eval_cfg, protocol="slow"), 0.1, False
        )


def test_protocol_dict_keeps_only_what_shaped_the_number():
    paper = EvalConfig(protocol="paper").protocol_dict("semisup")
    assert {"epochs", "lr_milestones", "subset_fraction"} <= set(paper)
    assert not {"fast_weight_decays", "knn_k", "cifar_variant", "ckpt", "workers"} & set(paper)
    fast = EvalConfig(protocol="fast").protocol_dict("linear")
    assert "fast_weight_decays" in fast and "epochs" not in fast and "subset_fraction" not in fast
    knn = EvalConfig().protocol_dict("knn")
    assert {"knn_k", "knn_temperature"} <= set(knn) and not {"epochs", "fast_holdout", "protocol"} & set(knn)


def test_small_cpu_solves_use_one_thread_and_restore_the_count():
    torch.set_num_threads(2)  # single_thread set 1 (and restores the count after): make the switch visible
    before = torch.get_num_threads()
    with probe.threads_for(1000, "cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with probe.threads_for(probe.SMALL_PROBLEM, "cpu"):
        assert torch.get_num_threads() == before


def test_a_weight_decay_chosen_on_few_held_out_images_is_flagged(cached_features):
    from downstream.linear import topk_result

    train, val = cached_features  # 160 train images: 20% held out = 32, fewer than 100
    acc, details = fast_probe(train, val, 4, EvalConfig(fast_max_iter=20))
    assert details["degenerate"] == [
        "fast probe: weight decay chosen on 32 held-out images (fewer than 100: the choice is mostly noise)"
    ]
    result = topk_result("linear", acc, "e", {"protocol": "fast"} | details, {})
    assert "degenerate" not in result.protocol and result.degenerate == details["degenerate"]
    # 100 held-out images are enough
    _, enough = fast_probe(train, val, 4, EvalConfig(fast_max_iter=20, fast_holdout=0.625))
    assert "degenerate" not in enough
