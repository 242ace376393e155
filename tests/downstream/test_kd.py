"""Hinton KD at the probe stage: the loss against a hand-written reference, the classifier file a
probe writes and KD reads, and KD probes in both protocols."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from downstream import linear
from downstream.config import EvalConfig
from downstream.kd import SoftTargets, fold_standardisation, kd_loss, load_classifier
from downstream.probe import fit_logistic_lbfgs
from infra.checkpoint import atomic_torch_save
from infra.errors import InputError
from tests.pretrain.helpers import save_student


def log_softmax(row: list) -> list:
    log_z = math.log(sum(math.exp(v) for v in row))
    return [v - log_z for v in row]


def test_kd_loss_matches_hand_reference():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    teacher = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    targets = torch.tensor([2, 0, 3])
    alpha, temp = 0.5, 2.0
    ce = kl = 0.0
    for b in range(3):
        ce += -log_softmax(student[b].tolist())[targets[b]]
        log_p_s = log_softmax([v / temp for v in student[b].tolist()])
        log_p_t = log_softmax([v / temp for v in teacher[b].tolist()])
        kl += sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_p_t, log_p_s))
    expected = (1 - alpha) * ce / 3 + alpha * temp**2 * kl / 3
    assert kd_loss(student, targets, teacher, alpha, temp).item() == pytest.approx(expected, rel=1e-12)
    # alpha 0 is plain cross-entropy; the teacher gets no gradient
    assert kd_loss(student, targets, teacher, 0.0, temp).item() == pytest.approx(ce / 3, rel=1e-12)


def test_kd_gradient_flows_to_the_student_only():
    student = torch.randn(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    kd_loss(student, torch.tensor([0, 1]), teacher, 0.5, 2.0).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_fold_standardisation_gives_the_same_logits():
    gen = torch.Generator().manual_seed(1)
    x, w, b = (
        torch.randn(5, 3, generator=gen),
        torch.randn(2, 3, generator=gen),
        torch.randn(2, generator=gen),
    )
    mean, std = torch.randn(3, generator=gen), torch.rand(3, generator=gen) + 0.5
    w2, b2 = fold_standardisation(w, b, mean, std)
    assert torch.allclose(x @ w2.t() + b2, ((x - mean) / std) @ w.t() + b, atol=1e-6)


def test_pure_distillation_reproduces_the_teachers_tempered_distribution():
    """alpha = 1, no weight decay: the fitted head's softmax(z / T) matches the teacher's softmax(t / T)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 4, generator=gen)
    teacher_logits = x @ torch.randn(3, 4, generator=gen).t() + torch.randn(3, generator=gen)
    labels = torch.randint(0, 3, (40,), generator=gen)  # ignored with alpha = 1
    head = fit_logistic_lbfgs(x, labels, 3, 0.0, 500, SoftTargets(teacher_logits, alpha=1.0, temperature=2.0))
    with torch.no_grad():
        got = torch.softmax(head(x) / 2.0, dim=1)
    assert torch.allclose(got, torch.softmax(teacher_logits / 2.0, dim=1), atol=2e-3)


def test_soft_targets_follow_the_row_subset():
    soft = SoftTargets(torch.arange(12.0).view(4, 3), 0.5, 2.0)
    assert torch.equal(
        soft.subset(torch.tensor([3, 1])).logits, torch.tensor([[9.0, 10.0, 11.0], [3.0, 4.0, 5.0]])
    )


@pytest.fixture(scope="module")
def teacher_probe(tmp_path_factory, tiny_imagefolder):
    """A 'teacher' checkpoint probed with the fast protocol, its head saved for KD: (file, probe result)."""
    root = tmp_path_factory.mktemp("kd")
    ckpt = save_student(root / "teacher.pt", seed=5)
    cfg = EvalConfig(
        ckpt=ckpt,
        data=str(tiny_imagefolder),
        out=str(root / "probe"),
        protocol="fast",
        image_size=16,
        device="cpu",
        fast_max_iter=50,
        fast_weight_decays=(1e-3,),
        kd_save_classifier=True,
    )
    result = linear.evaluate(cfg, progress=False)
    return root / "probe" / "classifier.pt", result


@pytest.fixture(scope="module")
def teacher_classifier(teacher_probe):
    return teacher_probe[0]


def test_saved_classifier_reproduces_the_probe(teacher_probe, tiny_imagefolder):
    """The saved head has the standardisation folded in: on raw features it scores val like the probe did."""
    path, result = teacher_probe
    saved = torch.load(path, weights_only=True)
    assert saved["kind"] == "classifier" and saved["source"]["protocol"] == "fast"
    classifier, info = load_classifier(path)
    assert info["num_classes"] == 3 and info["arch"] == "resnet10t" and len(info["sha256"]) == 64
    val = linear.image_folder_probe_data(str(tiny_imagefolder), 16).val
    images, labels = zip(*(val[i] for i in range(len(val))))
    with torch.no_grad():
        logits = classifier.eval()(torch.stack(images))
    top1 = 100.0 * (logits.argmax(dim=1) == torch.tensor(labels)).float().mean().item()
    probe_top1 = next(m.value for m in result.measurements if m.metric == "top1")
    assert top1 == pytest.approx(probe_top1)


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_kd_probe_trains_with_the_configured_weights_and_records_them(
    eval_cfg, teacher_classifier, protocol, monkeypatch
):
    from downstream import kd

    used = []  # (alpha, temperature) of every KD loss the probe computes
    original = kd.kd_loss
    monkeypatch.setattr(
        kd,
        "kd_loss",
        lambda s, y, t, alpha, temp: used.append((alpha, temp)) or original(s, y, t, alpha, temp),
    )
    cfg = dataclasses.replace(
        eval_cfg,
        protocol=protocol,
        epochs=1,
        kd_teacher=str(teacher_classifier),
        kd_alpha=0.3,
        kd_temperature=4.0,
        fast_weight_decays=(1e-3,),
    )
    result = linear.evaluate(cfg, progress=False)
    assert {m.metric for m in result.measurements} == {"top1", "top5"}
    assert used and set(used) == {(0.3, 4.0)}  # the loss the head trained on, not just the record
    assert result.protocol["kd_alpha"] == 0.3 and result.protocol["kd_temperature"] == 4.0
    assert (
        result.protocol["kd_teacher_arch"] == "resnet10t" and len(result.protocol["kd_teacher_sha256"]) == 64
    )


def test_kd_changes_the_fitted_head(eval_cfg, teacher_classifier, monkeypatch):
    """Same student and data, KD on or off: the fast protocol fits different heads."""
    from downstream import probe

    heads = []
    original = probe.fit_logistic_lbfgs
    monkeypatch.setattr(
        probe, "fit_logistic_lbfgs", lambda *a, **k: heads.append(original(*a, **k)) or heads[-1]
    )
    base = dataclasses.replace(eval_cfg, fast_weight_decays=(1e-3,))
    linear.evaluate(base, progress=False)
    linear.evaluate(dataclasses.replace(base, kd_teacher=str(teacher_classifier)), progress=False)
    plain, with_kd = heads[1], heads[3]  # each run: one holdout fit, one final fit
    assert not torch.allclose(plain.weight, with_kd.weight, atol=1e-4)


def test_kd_fields_are_recorded_only_when_kd_is_on():
    off = EvalConfig(kd_alpha=0.3).protocol_dict("linear")
    assert not any(k.startswith("kd_") for k in off)  # KD off: its settings change no number
    on = EvalConfig(
        kd_teacher="t.pt", kd_alpha=0.3, kd_temperature=4.0, kd_save_classifier=True
    ).protocol_dict("linear")
    assert (on["kd_alpha"], on["kd_temperature"]) == (0.3, 4.0)
    assert "kd_save_classifier" not in on  # writing the head's file changes no number either


def test_bad_kd_teacher_files_are_one_line_errors(tmp_path, eval_cfg, teacher_classifier):
    wrong = atomic_torch_save({"kind": "pretrain"}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="expected a classifier file"):
        load_classifier(wrong)
    with pytest.raises(InputError, match=r"kd_alpha=1\.5: expected"):  # validated where the field is defined
        linear.evaluate(
            dataclasses.replace(eval_cfg, kd_teacher=str(teacher_classifier), kd_alpha=1.5), progress=False
        )
    with pytest.raises(InputError, match="not found"):
        linear.evaluate(
            dataclasses.replace(eval_cfg, kd_teacher=str(tmp_path / "missing.pt")), progress=False
        )
