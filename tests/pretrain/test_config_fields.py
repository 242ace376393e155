"""Each config field is declared once (infra.validation.setting): its rule, whether it is in the
protocol and who reads it. The rule tables, the protocols and the per-method and per-task field
lists all come from that declaration; these tests hold the declarations to the registries."""

from __future__ import annotations

import dataclasses

import pytest

from downstream.config import EvalConfig, Reads
from downstream.registry import TASKS
from infra.validation import readers_of
from pretrain.config import FIELD_RULES, PretrainConfig, method_reads
from pretrain.methods import METHODS


def test_every_method_a_field_names_is_registered():
    named = {m for r in readers_of(PretrainConfig).values() if isinstance(r, tuple) for m in r}
    assert named and named <= set(METHODS), named - set(METHODS)


def test_every_task_an_eval_field_names_is_registered():
    readers = [r for r in readers_of(EvalConfig).values() if r is not None]
    assert all(isinstance(r, Reads) for r in readers)
    named = {t for r in readers if r.tasks for t in r.tasks}
    assert named and named <= set(TASKS), named - set(TASKS)
    assert {p for r in readers for p in r.protocols} <= {"paper", "fast"}


def test_the_rule_table_is_the_fields_own_rules():
    assert {f.name: f.metadata["rule"] for f in dataclasses.fields(PretrainConfig)} == FIELD_RULES


@pytest.mark.parametrize(
    "field, readers",
    [
        ("seed_student_temp", ["seed"]),
        ("seed_teacher_temp", ["seed"]),
        ("key_momentum", ["at", "at+disco", "disco", "disco*", "moco", "rkd", "rkd+disco"]),
        ("queue_size", ["at", "at+disco", "disco", "disco*", "moco", "rkd", "rkd+disco", "seed"]),
        (
            "distill_weight",
            ["at+disco", "dino+disco", "disco", "disco*", "distill-only", "rkd+disco", "swav+disco"],
        ),
        ("teacher_bn", sorted(m for m, cls in METHODS.items() if cls.needs_teacher)),
        ("swav_temperature", ["swav", "swav+disco"]),
        ("epochs", sorted(METHODS)),
    ],
)
def test_a_methods_protocol_holds_exactly_the_fields_it_reads(field, readers):
    assert sorted(m for m in METHODS if method_reads(m, field)) == readers
    for method in METHODS:
        assert (field in PretrainConfig(method=method).protocol()) == (method in readers), method


def test_paths_and_speed_of_io_are_never_in_a_protocol():
    for method in METHODS:
        protocol = PretrainConfig(method=method).protocol()
        assert not {
            "data",
            "out",
            "teacher_ckpt",
            "workers",
            "device",
            "log_every",
            "save_every_steps",
        } & set(protocol)


@pytest.mark.parametrize(
    "task, protocol, expected",
    [
        (
            "linear",
            "paper",
            ["protocol", "epochs", "image_size", "batch_size", "lr", "lr_milestones", "weight_decay", "seed"],
        ),
        (
            "linear",
            "fast",
            ["protocol", "image_size", "seed", "fast_weight_decays", "fast_holdout", "fast_max_iter"],
        ),
        ("knn", "fast", ["image_size", "cifar_variant", "knn_k", "knn_temperature"]),
        ("tsne", "paper", ["image_size", "classes", "per_class", "tsne_perplexity", "tsne_knn_k"]),
        # mi trains its SGD probe under either protocol (no milestones), never the L-BFGS one
        (
            "mi",
            "fast",
            [
                "protocol",
                "epochs",
                "image_size",
                "batch_size",
                "lr",
                "weight_decay",
                "seed",
                "cifar_variant",
                "mi_bins",
            ],
        ),
    ],
)
def test_an_eval_protocol_holds_exactly_what_the_task_reads(task, protocol, expected):
    assert list(EvalConfig(protocol=protocol).protocol_dict(task)) == expected
    # KD settings join only with a KD teacher
    with_kd = EvalConfig(protocol=protocol, kd_teacher="t.pt").protocol_dict(task)
    kd = {"kd_teacher", "kd_alpha", "kd_temperature"}
    assert (kd <= set(with_kd)) == (task in ("linear", "semisup", "cifar")) and not kd & set(expected)
