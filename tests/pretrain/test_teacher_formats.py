"""Every teacher checkpoint format, written by the test in that repository's exact key layout,
is detected, loaded strictly and gives the embedding the original code computes."""

from __future__ import annotations

import argparse
import functools
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from downstream.backbone import load_backbone
from infra.errors import InputError
from pretrain.models import build_backbone, feature_dim, infer_resnet_arch
from pretrain.teachers import detect_format, load_encoder, load_teacher, unfinished_checkpoints_allowed
from tests.pretrain.layouts import dino_checkpoint, moco_checkpoint, own_checkpoint, swav_state

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# Building and randomising a ResNet-18 is the slow part of these tests: each layout is made once
# per module, and a test that edits a state dict edits a shallow copy.
moco_r18 = functools.cache(lambda: moco_checkpoint("resnet18", hidden=32, out_dim=16))
swav_r18 = functools.cache(lambda: swav_state("resnet18", hidden=64, out_dim=16))
dino_r18 = functools.cache(
    lambda use_bn: dino_checkpoint("resnet18", hidden=48, bottleneck=24, use_bn=use_bn)
)


def moco_copy() -> dict:
    ckpt = dict(moco_r18()[0])
    ckpt["state_dict"] = dict(ckpt["state_dict"])
    return ckpt


def reference(backbone: nn.Module, head: nn.Module) -> torch.Tensor:
    """What the original code computes: L2-normalised head(pooled features), everything in eval mode."""
    backbone.eval()
    head.eval()
    with torch.no_grad():
        return F.normalize(head(backbone(X)), dim=1)


def embed(encoder) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(X)


def save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_moco_main_moco_checkpoint_loads_encoder_q_and_drops_key_encoder_and_queue(tmp_path):
    ckpt, backbone, head = moco_r18()
    encoder, info = load_encoder(save(tmp_path, ckpt))
    assert (info["format"], info["arch"]) == ("moco", "resnet18")
    assert info["head"] == {
        "in_dim": 512,
        "hidden": 32,
        "out_dim": 16,
        "batchnorm": False,
        "layers": 2,
        "activation": "relu",
    }
    assert torch.equal(embed(encoder), reference(backbone, head))


def test_moco_checkpoint_with_stray_or_missing_keys_is_an_error_listing_them(tmp_path):
    ckpt = moco_copy()
    ckpt["state_dict"]["module.predictor.weight"] = torch.zeros(1)
    with pytest.raises(
        InputError, match=r"keys outside encoder_q/encoder_k/queue: module\.predictor\.weight"
    ):
        load_encoder(save(tmp_path, ckpt))
    ckpt = moco_copy()
    del ckpt["state_dict"]["module.encoder_q.layer4.1.bn2.weight"]
    with pytest.raises(InputError, match=r"missing keys: layer4\.1\.bn2\.weight"):
        load_encoder(save(tmp_path, ckpt))


def test_moco_checkpoint_arch_disagreeing_with_teacher_flag_is_an_error(tmp_path):
    ckpt = moco_r18()[0]
    with pytest.raises(InputError, match="holds a resnet18 encoder, not the requested resnet34"):
        load_encoder(save(tmp_path, ckpt), "resnet34")


def test_swav_raw_state_dict_loads_bn_head_drops_prototypes_and_infers_arch(tmp_path):
    state, backbone, head = swav_r18()
    path = save(tmp_path, state)
    encoder, info = load_encoder(path)  # SwAV files do not name the arch: inferred from the keys
    assert (info["format"], info["arch"]) == ("swav", "resnet18")
    assert info["head"]["batchnorm"] and info["head"]["hidden"] == 64
    out = embed(encoder)
    assert torch.allclose(out, reference(backbone, head), atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))
    # SwAV training checkpoints hold the same dict under 'state_dict'
    encoder2, info2 = load_encoder(save(tmp_path, {"epoch": 3, "state_dict": state}, "train.pth"))
    assert info2["format"] == "swav" and torch.equal(embed(encoder2), out)


def test_swav_unexpected_key_is_an_error_listing_it(tmp_path):
    state = dict(swav_r18()[0])
    state["module.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(InputError, match=r"unexpected keys: extra_layer\.weight"):
        load_encoder(save(tmp_path, state))


@pytest.mark.parametrize("use_bn", [False, True])
def test_dino_checkpoint_uses_teacher_mlp_bottleneck_and_drops_last_layer(tmp_path, use_bn):
    ckpt, backbone, mlp = dino_r18(use_bn)
    encoder, info = load_encoder(save(tmp_path, ckpt))
    assert (info["format"], info["arch"]) == ("dino", "resnet18")
    assert info["head"] == {
        "in_dim": 512,
        "hidden": 48,
        "out_dim": 24,
        "batchnorm": use_bn,
        "layers": 3,
        "activation": "gelu",
    }
    assert torch.allclose(embed(encoder), reference(backbone, mlp), atol=1e-6)


def test_dino_bare_teacher_state_dict_and_args_arch_mapping(tmp_path):
    ckpt, backbone, mlp = dino_r18(False)
    encoder, info = load_encoder(save(tmp_path, ckpt["teacher"]))
    assert info["format"] == "dino" and torch.allclose(embed(encoder), reference(backbone, mlp), atol=1e-6)
    ckpt = dict(ckpt, args=argparse.Namespace(arch="vit_small", patch_size=16))
    # DINO's --arch vit_small with patch 16 is timm's vit_small_patch16_224, which these keys do not fit
    with pytest.raises(InputError, match="holds a vit_small_patch16_224 encoder, not the requested resnet18"):
        load_encoder(save(tmp_path, ckpt, "vit.pth"), "resnet18")


def test_dino_stray_head_key_is_an_error(tmp_path):
    ckpt = dict(dino_r18(False)[0])
    ckpt["teacher"] = dict(ckpt["teacher"])
    ckpt["teacher"]["head.center"] = torch.zeros(3)
    with pytest.raises(InputError, match="DINO head has keys outside mlp/last_layer: center"):
        load_encoder(save(tmp_path, ckpt))


def test_plain_torchvision_state_dict_is_a_backbone_not_a_teacher(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    path = save(tmp_path, tv.state_dict(), "resnet18-tv.pth")
    encoder, info = load_encoder(path)
    assert (info["format"], info["arch"], info["head"]) == ("plain", "resnet18", None)
    backbone, _ = load_backbone(str(path))
    tv.fc = nn.Identity()
    tv.eval()
    backbone.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(X), tv(X), atol=1e-5)  # same network, torchvision keys
    with pytest.raises(
        InputError, match=r"backbone-only \(plain\) resnet18 state dict with no projection head"
    ):
        load_teacher(path)


def test_plain_timm_state_dict_with_module_prefix_needs_arch_when_not_a_resnet(tmp_path):
    net = build_backbone("resnet10t")  # deep stem: not a torchvision-layout ResNet
    state = {"module." + k: v for k, v in net.state_dict().items()}
    path = save(tmp_path, {"model": state})
    with pytest.raises(
        InputError, match=r"does not name its architecture .* pretrain --teacher ARCH, or .*'arch': TIMM_NAME"
    ):
        load_encoder(path)
    encoder, info = load_encoder(path, "resnet10t")
    assert info["format"] == "plain"
    assert torch.equal(encoder.backbone.conv1[0].weight, net.conv1[0].weight)


def test_a_plain_state_dict_saved_with_its_name_loads_for_eval_and_the_error_names_real_flags(
    tmp_path, capsys
):
    """eval and convert have no --teacher: a timm state dict names its network in the file instead."""
    from disco_bench.cli import build_parser

    net = build_backbone("resnet10t")
    named = save(tmp_path, {"arch": "resnet10t", "state_dict": net.state_dict()})
    encoder, info = load_encoder(named)
    assert info["arch"] == "resnet10t" and torch.equal(encoder.backbone.conv1[0].weight, net.conv1[0].weight)
    with pytest.raises(InputError) as error:
        load_encoder(save(tmp_path, {"model": net.state_dict()}))
    flags = re.findall(r"--[a-z-]+", str(error.value))
    assert flags == ["--teacher"]
    parser = build_parser()
    commands = {
        name: sub for action in parser._actions if hasattr(action, "choices") and action.choices
        for name, sub in (action.choices.items() if isinstance(action.choices, dict) else [])
    }  # fmt: skip
    assert any(a.option_strings == ["--teacher"] for a in commands["pretrain"]._actions)
    assert not any("--teacher" in a.option_strings for a in commands["eval"]._actions)


def test_own_checkpoint_round_trip(tmp_path):
    ckpt, reference_encoder = own_checkpoint("resnet18", hidden=32, out_dim=16)
    encoder, info = load_teacher(save(tmp_path, ckpt))
    assert (info["format"], info["arch"], info["method"]) == ("disco-bench", "resnet18", "moco")
    assert torch.equal(embed(encoder), embed(reference_encoder))


def test_unrecognised_layout_is_an_error_naming_the_formats(tmp_path):
    with pytest.raises(
        InputError,
        match=r"unrecognised checkpoint layout \(top-level keys: epoch, notes\); expected one of "
        r"disco-bench, moco, swav, dino, plain",
    ):
        load_encoder(save(tmp_path, {"epoch": 1, "notes": "x"}))


def test_detect_format_order():
    assert detect_format(dino_r18(False)[0]) == "dino"
    assert detect_format(dino_r18(False)[0]["teacher"]) == "dino"
    assert detect_format(swav_r18()[0]) == "swav"
    assert detect_format(moco_r18()[0]) == "moco"
    assert detect_format({"conv1.weight": torch.zeros(1)}) == "plain"


def test_resnet50w2_builds_with_swav_widths_and_key_names():
    with torch.device("meta"):  # 94M parameters: shapes and names only
        net = build_backbone("resnet50w2")
    state = net.state_dict()
    assert feature_dim(net) == 4096
    assert tuple(state["conv1.weight"].shape) == (128, 3, 7, 7)
    assert tuple(state["layer1.0.conv1.weight"].shape) == (128, 128, 1, 1)
    assert tuple(state["layer1.0.conv3.weight"].shape) == (512, 128, 1, 1)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (512, 128, 1, 1)
    assert tuple(state["layer4.2.conv3.weight"].shape) == (4096, 1024, 1, 1)
    assert not any(k.startswith("fc.") for k in state)
    assert infer_resnet_arch(state) == "resnet50w2"


@pytest.mark.parametrize("name", ["resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2"])
def test_infer_resnet_arch_from_torchvision_keys(name):
    with torch.device("meta"):  # shapes only: no memory, no init time
        state = getattr(torchvision.models, name)(weights=None).state_dict()
    assert infer_resnet_arch(state) == name


@pytest.mark.parametrize("fmt", ["disco-bench", "plain"])
def test_nan_weights_are_refused_at_load_time_naming_the_tensor(fmt, tmp_path):
    if fmt == "disco-bench":
        ckpt, _ = own_checkpoint("resnet18", hidden=32, out_dim=16)
        ckpt["encoder"] = dict(ckpt["encoder"], backbone=dict(ckpt["encoder"]["backbone"]))
        state = ckpt["encoder"]["backbone"]
    else:
        ckpt = state = dict(torchvision.models.resnet18().state_dict())
    state["layer2.0.conv1.weight"] = (
        state["layer2.0.conv1.weight"].clone().index_fill_(0, torch.tensor([3]), float("nan"))
    )
    path = save(tmp_path, ckpt)
    with pytest.raises(
        InputError,
        match=rf"^checkpoint {path} holds NaN/Inf weights \(layer2.0.conv1.weight\); "
        r"expected finite weights",
    ):
        load_encoder(path)


def test_an_unfinished_checkpoint_is_refused_unless_allowed_and_then_says_so(tmp_path):
    ckpt, reference_encoder = own_checkpoint("resnet18", hidden=32, out_dim=16)
    path = save(tmp_path, ckpt | {"done": False, "step": 7, "epoch": 2}, "last.pt")
    with pytest.raises(
        InputError,
        match=rf"^checkpoint {path} is from an unfinished run \(saved at step 7, epoch 2\); "
        r"expected the final.pt of a finished run \(eval --allow-unfinished",
    ):
        load_backbone(str(path))
    with unfinished_checkpoints_allowed():
        encoder, info = load_encoder(path)
    assert info["protocol"] == {"method": "moco", "unfinished": {"step": 7, "epoch": 2}}
    assert torch.equal(embed(encoder), embed(reference_encoder))
    with pytest.raises(InputError, match="unfinished run"):  # the permission ends with the block
        load_encoder(path)
    _, info = load_encoder(save(tmp_path, ckpt, "final.pt"))
    assert "unfinished" not in info["protocol"]


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


TEACHER_FILES = {
    "disco-bench": lambda: own_checkpoint("resnet18", hidden=32, out_dim=16)[0],
    "moco": lambda: moco_r18()[0],
    "swav": lambda: swav_r18()[0],
    "dino": lambda: dino_r18(True)[0],
}


def spy_on_builds(monkeypatch, extra=None) -> list[str]:
    """The device each backbone build of pretrain.teachers is made on (meta: no initialisation runs)."""
    import pretrain.teachers as teachers

    devices = []

    def build(arch: str) -> nn.Module:
        devices.append(torch.empty(()).device.type)
        backbone = build_backbone(arch)
        return extra(backbone) if extra else backbone

    monkeypatch.setattr(teachers, "build_backbone", build)
    return devices


@pytest.mark.parametrize("fmt", TEACHER_FILES)
def test_a_teacher_built_without_random_init_is_the_encoder_the_file_holds(fmt, tmp_path, monkeypatch):
    path = save(tmp_path, TEACHER_FILES[fmt]())
    devices = spy_on_builds(monkeypatch)
    teacher, _ = load_teacher(path)  # backbone built on the meta device and handed the file's tensors
    encoder, _ = load_encoder(path)  # built and initialised, then loaded: the evaluation path
    assert devices == ["meta", "cpu"]
    got, want = tensors(teacher), tensors(encoder)
    assert got.keys() == want.keys()
    for name, tensor in got.items():
        assert tensor.device.type == "cpu" and tensor.dtype == want[name].dtype, name
        assert torch.equal(tensor, want[name]) and tensor.requires_grad == want[name].requires_grad, name
    assert torch.equal(embed(teacher), embed(encoder))


def test_a_channels_last_teacher_file_gives_the_initialised_paths_layout_and_embedding(tmp_path):
    ckpt, _ = own_checkpoint("resnet18", hidden=32, out_dim=16)
    nhwc = {  # as a checkpoint of a channels_last run holds its convolution weights
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        for k, v in ckpt["encoder"]["backbone"].items()
    }
    path = save(tmp_path, ckpt | {"encoder": ckpt["encoder"] | {"backbone": nhwc}})
    teacher, encoder = load_teacher(path)[0], load_encoder(path)[0]
    assert all(t.is_contiguous() for t in teacher.backbone.parameters())
    assert torch.equal(embed(teacher), embed(encoder))


def test_a_half_precision_teacher_file_loads_as_the_models_dtypes(tmp_path):
    ckpt, reference_encoder = own_checkpoint("resnet18", hidden=32, out_dim=16)
    half = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["encoder"]["backbone"].items()}
    ckpt = ckpt | {"encoder": ckpt["encoder"] | {"backbone": half}}
    teacher, _ = load_teacher(save(tmp_path, ckpt))
    assert {t.dtype for t in teacher.backbone.parameters()} == {torch.float32}
    for name, tensor in teacher.backbone.state_dict().items():
        assert torch.equal(tensor, half[name].to(tensor.dtype)), name


def test_a_backbone_with_a_tensor_the_file_cannot_fill_is_built_the_usual_way(tmp_path, monkeypatch):
    def with_a_derived_buffer(backbone: nn.Module) -> nn.Module:  # a non-persistent buffer: in no state dict
        backbone.register_buffer("scale", torch.full((1,), 2.0), persistent=False)
        return backbone

    ckpt, reference_encoder = own_checkpoint("resnet18", hidden=32, out_dim=16)
    devices = spy_on_builds(monkeypatch, with_a_derived_buffer)
    teacher, _ = load_teacher(save(tmp_path, ckpt))
    assert devices == ["meta", "cpu"]  # tried on meta, then built and initialised
    assert not any(t.is_meta for t in tensors(teacher).values())
    assert torch.equal(teacher.backbone.scale, torch.full((1,), 2.0))
    assert torch.equal(embed(teacher), embed(reference_encoder))
