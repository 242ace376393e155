"""Detectron2 backend: the paper's engine. ResNet students run Faster R-CNN C4 (VOC) / Mask R-CNN C4
(COCO) from weights written by :mod:`downstream.detection.convert`; other students (EfficientNet,
MobileNet, ...) plug in as a Detectron2 backbone made of their timm ``features_only`` maps + FPN.

Fixes over the reference harness (docs/method.md#defects): the RGB pixel mean/std and
``STRIDE_IN_1X1: False`` that converted torchvision-style weights need are set in code, so they
cannot be dropped by a YAML with two ``MODEL:`` keys (defect 4); ResNet-18/34 get a res5 box head of
basic blocks so their pretrained res5 loads (defect 5); EfficientNet/MobileNet get a detection path.

The C4 box head follows MoCo's detection config (the one the paper's numbers come from):
``Res5ROIHeadsExtraNorm`` (res5 followed by one more norm layer of the backbone's kind), SyncBN, and
PreciseBN over ``schedule.precise_bn_iters`` batches after training (``det_head=res5``: the plain
res5 head, as before). Masks train as polygons when every mask is one, else as bitmasks (RLE,
compressed or not, is valid COCO); crowd regions carry ``iscrowd=1``, which Detectron2's mapper
leaves out of training; VOC ``difficult`` objects are trained on.

Runs on one process or, under torchrun, on N with DDP and the global batch split over them
(:mod:`downstream.detection.distributed`); ``det_norm=syncbn`` is SyncBN on several processes (on
CPUs Detectron2's all-reduce ``naiveSyncBN``) and plain BN (which is what SyncBN computes there) on one. Evaluation uses the same pycocotools / VOC code as the torchvision
backend (:mod:`downstream.detection.metrics`) on Detectron2's predictions. A non-finite loss ends in
:class:`~downstream.detection.schedule.DetectionDiverged`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import SimpleTrainer, hooks
from detectron2.engine.hooks import get_bn_modules
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone, build_model
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from detectron2.structures import BoxMode
from detectron2.utils.env import seed_all_rng
from pycocotools import mask as mask_utils
from torch.utils.data import SequentialSampler
from tqdm import tqdm

from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.detection.backbones import build_features, freeze_batchnorm, load_features_state
from downstream.detection.convert import (
    D2_RESNET_DEPTHS,
    convert_checkpoint,
    place_weights,
    read_detectron2_weights,
)
from downstream.detection.data import DetectionSet
from downstream.detection.distributed import (
    gather_on_main,
    join,
    per_process_batch,
    plain_bn_label,
    rank_seed,
    share_from_main,
    test_shard,
    use_detectron2_group,
    wrap_ddp,
)
from downstream.detection.metrics import Prediction, encode_masks
from downstream.detection.schedule import Schedule, diverged, loss_curve
from infra.distributed import pick_device
from infra.errors import InputError

# docs/method.md#detection: converted torchvision-style weights expect RGB input normalised like ImageNet.
PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]
NORM_NAMES = {"bn": "BN", "frozen": "FrozenBN"}  # syncbn: see d2_norm


@ROI_HEADS_REGISTRY.register()
class BasicBlockRes5ROIHeads(Res5ROIHeads):
    """Res5ROIHeads whose res5 matches the backbone's depth: basic blocks for ResNet-18/34
    (2 or 3 blocks, 256 -> 512 channels), Detectron2's bottleneck res5 otherwise."""

    @classmethod
    def _build_res5_block(cls, cfg):
        depth = cfg.MODEL.RESNETS.DEPTH
        if depth not in (18, 34):
            return super()._build_res5_block(cfg)
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8
        blocks = ResNet.make_stage(
            BasicBlock,
            {18: 2, 34: 3}[depth],
            stride_per_block=[2] + [1] * ({18: 2, 34: 3}[depth] - 1),
            in_channels=out_channels // 2,
            out_channels=out_channels,
            norm=cfg.MODEL.RESNETS.NORM,
        )
        return torch.nn.Sequential(*blocks), out_channels


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(BasicBlockRes5ROIHeads):
    """MoCo's C4 head: res5 (of the backbone's block type) followed by one more norm layer of
    ``MODEL.RESNETS.NORM``, named ``res5.norm`` as in MoCo's detection code."""

    @classmethod
    def _build_res5_block(cls, cfg):
        res5, out_channels = super()._build_res5_block(cfg)
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return res5, out_channels


HEADS = {"extranorm": "Res5ROIHeadsExtraNorm", "res5": "BasicBlockRes5ROIHeads"}


class TimmFeatures(Backbone):
    """A timm ``features_only`` model as a Detectron2 backbone (outputs stage1..stage4, strides 4..32)."""

    def __init__(self, arch: str):
        super().__init__()
        self.body = build_features(arch)
        self._out_features = [f"stage{i + 1}" for i in range(len(self.body.feature_info.channels()))]
        self._out_feature_channels = dict(zip(self._out_features, self.body.feature_info.channels()))
        self._out_feature_strides = dict(zip(self._out_features, self.body.feature_info.reduction()))

    def forward(self, x):
        return dict(zip(self._out_features, self.body(x)))


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    bottom_up = TimmFeatures(cfg.MODEL.TIMM_ARCH)
    return FPN(
        bottom_up=bottom_up,
        in_features=bottom_up._out_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type="sum",
    )


def d2_norm(det_norm: str, world_size: int = 1, device: str = "cuda") -> str:
    if det_norm == "syncbn":  # torch's SyncBatchNorm is CUDA-only; Detectron2's naive one all-reduces on gloo
        return ("SyncBN" if device == "cuda" else "naiveSyncBN") if world_size > 1 else "BN"
    return NORM_NAMES[det_norm]


def _anchor_sizes(schedule: Schedule) -> list[float]:
    scale = schedule.test_min_size / 800  # Detectron2's 32..512 px anchors are for 800 px images
    return [max(4.0, s * scale) for s in (32, 64, 128, 256, 512)]


def build_config(
    cfg: EvalConfig,
    arch: str,
    num_classes: int,
    masks: bool,
    schedule: Schedule,
    seed: int,
    world_size: int = 1,
    mask_format: str = "polygon",
) -> CfgNode:
    """The effective Detectron2 config: paper schedule (docs/method.md#detection) + what converted weights need."""
    d2 = get_cfg()
    d2.MODEL.TIMM_ARCH = ""  # our key: the timm architecture of the FPN backbone
    d2.MODEL.DEVICE = pick_device(cfg.device).type
    d2.MODEL.MASK_ON = masks
    d2.INPUT.MASK_FORMAT = mask_format
    d2.MODEL.PIXEL_MEAN, d2.MODEL.PIXEL_STD, d2.INPUT.FORMAT = PIXEL_MEAN, PIXEL_STD, "RGB"
    d2.MODEL.BACKBONE.FREEZE_AT = 0  # all parameters fine-tuned
    d2.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    d2.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = schedule.rois_per_image
    norm = d2_norm(cfg.det_norm, world_size, d2.MODEL.DEVICE)
    sizes = _anchor_sizes(schedule)
    if arch in D2_RESNET_DEPTHS:  # C4, as in the paper (Base-RCNN-C4)
        depth = D2_RESNET_DEPTHS[arch]
        d2.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        d2.MODEL.RESNETS.DEPTH = depth
        d2.MODEL.RESNETS.STRIDE_IN_1X1 = False
        d2.MODEL.RESNETS.NORM = norm
        d2.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
        d2.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        d2.MODEL.RPN.IN_FEATURES = d2.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        d2.MODEL.RPN.PRE_NMS_TOPK_TEST, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 6000, 1000
        d2.MODEL.ROI_HEADS.NAME = HEADS[cfg.det_head]
        d2.MODEL.ANCHOR_GENERATOR.SIZES = [sizes]
    else:  # timm feature maps + FPN (Base-RCNN-FPN heads)
        d2.MODEL.TIMM_ARCH = arch
        d2.MODEL.BACKBONE.NAME = "build_timm_fpn_backbone"
        d2.MODEL.FPN.OUT_CHANNELS = 256
        d2.MODEL.ANCHOR_GENERATOR.SIZES = [[s] for s in sizes]
        d2.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        d2.MODEL.RPN.PRE_NMS_TOPK_TRAIN, d2.MODEL.RPN.PRE_NMS_TOPK_TEST = 2000, 1000
        d2.MODEL.RPN.POST_NMS_TOPK_TRAIN, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 1000, 1000
        d2.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        d2.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        d2.MODEL.ROI_BOX_HEAD.NAME, d2.MODEL.ROI_BOX_HEAD.NUM_FC, d2.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = (
            "FastRCNNConvFCHead",
            2,
            7,
        )
        (
            d2.MODEL.ROI_MASK_HEAD.NAME,
            d2.MODEL.ROI_MASK_HEAD.NUM_CONV,
            d2.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
        ) = ("MaskRCNNConvUpsampleHead", 4, 14)
    d2.MODEL.RPN.POST_NMS_TOPK_TRAIN = min(schedule.proposals_per_image, d2.MODEL.RPN.POST_NMS_TOPK_TRAIN)
    d2.MODEL.RPN.POST_NMS_TOPK_TEST = min(schedule.test_proposals_per_image, d2.MODEL.RPN.POST_NMS_TOPK_TEST)
    d2.TEST.DETECTIONS_PER_IMAGE = schedule.detections_per_image
    d2.INPUT.MIN_SIZE_TRAIN = tuple(schedule.train_min_size)
    d2.INPUT.MIN_SIZE_TRAIN_SAMPLING = "range"
    d2.INPUT.MIN_SIZE_TEST = schedule.test_min_size
    d2.INPUT.MAX_SIZE_TRAIN = d2.INPUT.MAX_SIZE_TEST = schedule.max_size
    d2.SOLVER.IMS_PER_BATCH = schedule.batch_size
    d2.SOLVER.BASE_LR = schedule.lr
    d2.SOLVER.MAX_ITER = schedule.max_iter
    d2.SOLVER.STEPS = tuple(schedule.steps)
    d2.SOLVER.WARMUP_ITERS = schedule.warmup_iters
    d2.SOLVER.WARMUP_FACTOR = 0.001
    d2.SOLVER.WEIGHT_DECAY, d2.SOLVER.MOMENTUM = schedule.weight_decay, schedule.momentum
    # Detectron2's own clipping ("norm") clips each parameter separately; _ClipGradNorm clips the norm
    # over every parameter, as the torchvision backend does, so the setting means the same on both.
    d2.SOLVER.CLIP_GRADIENTS.ENABLED = False
    d2.TEST.PRECISE_BN.ENABLED = schedule.precise_bn_iters > 0
    d2.TEST.PRECISE_BN.NUM_ITER = schedule.precise_bn_iters
    d2.DATALOADER.NUM_WORKERS = cfg.loader_workers()
    d2.SEED = seed
    d2.OUTPUT_DIR = cfg.out
    d2.freeze()
    return d2


def mask_format(ds: DetectionSet) -> str:
    """'polygon' when every mask of ``ds`` is a polygon list (Detectron2's default), else 'bitmask'."""
    segms = [a.segmentation for img in ds.images for a in img.annotations if a.segmentation]
    return "polygon" if all(isinstance(s, list) for s in segms) else "bitmask"


def _d2_segmentation(segm, height: int, width: int, fmt: str):
    """Polygons as they are; an RLE as the compressed dict Detectron2's bitmask path decodes."""
    if fmt == "polygon" or isinstance(segm, list):
        return segm
    if isinstance(segm.get("counts"), list):  # uncompressed RLE (COCO's crowd regions)
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def dataset_dicts(ds: DetectionSet, masks: bool, fmt: str = "polygon") -> list[dict]:
    """Detectron2's standard dataset dicts; crowd regions carry iscrowd=1 (left out of training by
    Detectron2's mapper); VOC difficult objects are ordinary training objects."""
    out = []
    for img in ds.images:
        anns = []
        for a in img.annotations:
            ann = {
                "bbox": list(a.box),
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": a.category,
                "iscrowd": int(a.crowd),
            }
            if masks and a.segmentation:
                ann["segmentation"] = _d2_segmentation(a.segmentation, img.height, img.width, fmt)
            anns.append(ann)
        out.append(
            {
                "file_name": str(img.path),
                "image_id": img.image_id,
                "height": img.height,
                "width": img.width,
                "annotations": anns,
            }
        )
    return out


def load_converted(model, pkl: str | Path) -> list[str]:
    """Load a converted ``.pkl`` (read by the safe loader) into ``model``; every backbone and res5
    block weight must be found (the heads, and the extra res5 norm, start as in MoCo: fresh). Returns
    the modules left at their initialisation."""
    state = model.state_dict()
    placed = place_weights(read_detectron2_weights(pkl), state, str(pkl))
    model.load_state_dict(placed, strict=False)
    missing = [k for k in state if k not in placed]
    needed = [
        k
        for k in missing
        if k.startswith(("backbone.", "roi_heads.res5.")) and not k.startswith("roi_heads.res5.norm.")
    ]
    if needed:
        raise InputError(
            f"{pkl}: Detectron2 model has backbone weights the converted file lacks: {', '.join(needed[:6])}"
        )
    return sorted({k.rsplit(".", 1)[0] for k in missing})


def _load_resnet(model, cfg: EvalConfig) -> dict:
    """Convert the checkpoint (into a temporary folder: nothing is left in --out) and load it; the
    heads start random, as in the paper."""
    with tempfile.TemporaryDirectory(prefix="disco-bench-d2-") as tmp:
        summary = convert_checkpoint(cfg.ckpt, Path(tmp) / "student_detectron2.pkl")
        return {"converted_keys": summary["keys"], "random_init": load_converted(model, summary["out"])}


def _load_timm(model, cfg: EvalConfig) -> dict:
    backbone, _ = load_backbone(cfg.ckpt)
    body = model.backbone.bottom_up.body
    dropped = load_features_state(body, backbone.state_dict(), f"checkpoint {cfg.ckpt}")
    if cfg.det_norm == "frozen":
        # the freeze both backends share: timm's BatchNormAct2d keeps its activation (Detectron2's
        # convert_frozen_batchnorm made it a plain FrozenBatchNorm2d and dropped the activation)
        model.backbone.bottom_up.body = freeze_batchnorm(body)
    return {"features_dropped": sorted({k.split(".")[0] for k in dropped})}


class _Collect(DatasetEvaluator):
    """Keeps Detectron2's per-image outputs as :class:`Prediction` objects."""

    def __init__(self, masks: bool):
        self.masks, self.predictions = masks, []

    def reset(self):
        self.predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self.predictions.append(
                Prediction(
                    inp["image_id"],
                    inst.pred_boxes.tensor.numpy(),
                    inst.scores.numpy(),
                    inst.pred_classes.numpy(),
                    encode_masks(inst.pred_masks.numpy()) if self.masks else None,
                )
            )

    def evaluate(self):
        return {}


class _ClipGradNorm(hooks.HookBase):
    """Clip the gradient norm over all parameters to ``max_norm`` after each backward pass."""

    def __init__(self, model, max_norm: float):
        self.params, self.max_norm = [p for p in model.parameters() if p.requires_grad], max_norm

    def after_backward(self):
        torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)


class _Progress(hooks.HookBase):
    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="detection (detectron2)", disable=not enabled, leave=False)

    def after_step(self):
        self.bar.update(1)

    def after_train(self):
        self.bar.close()


def _nonfinite_step(exc: FloatingPointError, trainer) -> tuple[int, dict[str, float]]:
    """(iteration counted from 1, loss terms) of the step whose loss was not finite, read from the
    trainer's message ("... at iteration=I!\nloss_dict = {'loss_cls': nan, ...}")."""
    text = str(exc)
    found = re.search(r"iteration=(\d+)", text)
    # values print as 1.5, nan or (numpy 2) np.float64(nan)
    terms = {k: float(v) for k, v in re.findall(r"'(\w+)': (?:np\.float\d+\()?([-+\w.]+)", text)}
    it = int(found.group(1)) + 1 if found else trainer.iter + 1
    if not terms:  # the box head refused NaN/Inf predictions first: the weights went bad in the step before
        terms = {"box head predictions": float("nan")} | {
            f"{k} at iteration {it - 1}": h.latest()
            for k, h in trainer.storage.histories().items()
            if k.startswith("loss_")
        }
    return it, terms


def _quiet_detectron2() -> None:
    # Detectron2 logs every config and key table at INFO; the task reports through its records
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    # the trainer logs an exception with its traceback before re-raising it; the task reports it in one line
    logging.getLogger("detectron2.engine.train_loop").setLevel(logging.CRITICAL)
    # Detectron2's layers ask torch.fx.is_fx_tracing(), which torch answers with a deprecation warning
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    # library-internal deprecation notices (Detectron2 0.7 on current torch), not about the user's input
    for message in ("torch.jit.script", "The given NumPy array is not writable", "torch.meshgrid"):
        warnings.filterwarnings("ignore", message=f".*{message}")


def fine_tune_and_predict(
    cfg: EvalConfig,
    train: DetectionSet,
    test: DetectionSet,
    masks: bool,
    schedule: Schedule,
    seed: int,
    progress: bool,
) -> tuple[list[Prediction] | None, dict, dict]:
    """Fine-tune with Detectron2's trainer and predict ``test``: (predictions, details, info)."""
    _quiet_detectron2()
    _, info = load_backbone(cfg.ckpt)
    procs, device = join(pick_device(cfg.device))  # under torchrun: one of N DDP processes
    use_detectron2_group(procs)
    # Detectron2's loader splits the global batch itself; an uneven split is refused here, in one line
    per_process_batch(schedule.batch_size, procs)
    seed_all_rng(seed)
    fmt = mask_format(train)
    d2 = build_config(
        cfg, info["arch"], len(train.classes), masks, schedule, seed, procs.world_size, mask_format=fmt
    )
    model = build_model(d2)
    loaded = _load_resnet(model, cfg) if info["arch"] in D2_RESNET_DEPTHS else _load_timm(model, cfg)
    if procs.enabled:  # each rank its own augmentation draws (Detectron2's default_setup seeds per rank too)
        seed_all_rng(rank_seed(seed, procs))
    from detectron2.solver import build_lr_scheduler, build_optimizer

    optimizer = build_optimizer(d2, model)
    train_dicts = dataset_dicts(train, masks, fmt)

    def train_loader(loader_seed: int):
        return build_detection_train_loader(
            train_dicts,
            mapper=DatasetMapper(d2, is_train=True),
            total_batch_size=schedule.batch_size,
            sampler=TrainingSampler(len(train.images), seed=loader_seed),
            num_workers=cfg.loader_workers(),
        )

    trainer = SimpleTrainer(wrap_ddp(model, procs, device), train_loader(seed), optimizer)
    precise = d2.TEST.PRECISE_BN.ENABLED and bool(get_bn_modules(model))
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(optimizer, build_lr_scheduler(d2, optimizer)),
            _Progress(schedule.max_iter, progress and procs.is_main),
        ]
        + ([_ClipGradNorm(model, schedule.clip_grad)] if schedule.clip_grad > 0 else [])
        + (
            [hooks.PreciseBN(0, model, train_loader(seed + 1), d2.TEST.PRECISE_BN.NUM_ITER)]
            if precise
            else []
        )
    )
    try:
        trainer.train(0, schedule.max_iter)
    except FloatingPointError as exc:
        it, terms = _nonfinite_step(exc, trainer)
        raise diverged(it, terms, schedule, schedule.clip_grad) from None
    # each rank predicts its share of the test set with the weights DDP kept equal
    collect = _Collect(masks)
    shard = test_shard(test, procs)
    test_loader = build_detection_test_loader(
        dataset_dicts(shard, masks, fmt),
        mapper=DatasetMapper(d2, is_train=False),
        sampler=SequentialSampler(shard.images),
        num_workers=cfg.loader_workers(),
    )
    inference_on_dataset(model, test_loader, collect)
    predictions = gather_on_main(collect.predictions, test, procs)
    if not procs.is_main:  # rank 0 alone logs the losses: it evaluates and reports
        return None, share_from_main(None, procs), info
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    details = {
        "seed": seed,
        "first_loss": float(losses[0]),
        "final_loss": float(np.mean(losses[-10:])),
        "loss_curve": loss_curve(losses),
        "mask_format": fmt if masks else None,
        "precise_bn_layers": len(get_bn_modules(model)) if precise else 0,
        "roi_head": d2.MODEL.ROI_HEADS.NAME,
        "norm_effective": d2.MODEL.RESNETS.NORM
        if info["arch"] in D2_RESNET_DEPTHS
        else plain_bn_label(cfg.det_norm, procs),  # the timm body keeps its own BatchNorm
        "arch_path": "C4" if info["arch"] in D2_RESNET_DEPTHS else "timm+FPN",
    } | loaded
    return predictions, share_from_main(details, procs), info
