"""``list``: what the registries hold, as JSON on stdout; every entry it names is usable."""

from __future__ import annotations

import json

import pytest
import torch

from disco_bench.cli import main
from disco_bench.suite import load_suite
from pretrain.models import build_backbone, feature_dim

# what the README promises, written independently of the registries
README_METHODS = {
    "moco",
    "disco",
    "disco*",
    "seed",
    "at",
    "at+disco",
    "rkd",
    "rkd+disco",
    "swav",
    "swav+disco",
    "dino",
    "dino+disco",
}
README_TASKS = {"linear", "semisup", "cifar", "knn", "detection", "tsne", "mi"}
# pooled feature width of the paper's networks (the DisCo* head's hidden width)
PAPER_FEATURE_WIDTHS = {
    "efficientnet_b0": 1280,
    "efficientnet_b1": 1280,
    "mobilenetv3_large_100": 1280,
    "resnet18": 512,
    "resnet34": 512,
    "vit_tiny_patch16_224": 192,
    "xcit_tiny_12_p16_224": 192,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnet50w2": 4096,
    "vit_small_patch16_224": 384,
    "xcit_small_12_p16_224": 384,
}


def listed(capsys, *what: str) -> dict:
    assert main(["list", *what]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_names_every_registry_and_the_readme_s_entries(capsys):
    everything = listed(capsys)
    assert set(everything) == {"methods", "tasks", "suites", "models"}
    assert set(everything["methods"]) >= README_METHODS
    assert set(everything["tasks"]) >= README_TASKS
    assert {"smoke", "cpu", "full"} <= set(everything["suites"])
    assert set(everything["models"]) == {"students", "teachers"}


@pytest.mark.parametrize("what", ["methods", "tasks", "suites", "models"])
def test_list_one_registry_prints_only_it(capsys, what):
    assert list(listed(capsys, what)) == [what]


def test_every_listed_suite_loads(capsys):
    for name in listed(capsys, "suites")["suites"]:
        assert load_suite(name).steps, name


def test_every_listed_model_builds_with_the_paper_s_feature_width(capsys):
    models = listed(capsys, "models")["models"]
    for name in models["students"] + models["teachers"]:
        with torch.device("meta"):  # shapes only: no memory, no weights
            backbone = build_backbone(name)
        assert feature_dim(backbone) == PAPER_FEATURE_WIDTHS[name], name


def test_an_unknown_registry_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "teachers"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "teachers" in err[0], err
