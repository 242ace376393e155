"""Detectron2 backend: the paper's engine. ResNet students run Faster R-CNN C4 (VOC) / Mask R-CNN C4
(COCO) from weights written by :mod:`downstream.detection.convert`; other students (EfficientNet,
MobileNet, ...) plug in as a Detectron2 backbone made of their timm ``features_only`` maps + FPN.

Fixes over the reference harness (METHOD.md section 7): the RGB pixel mean/std and
``STRIDE_IN_1X1: False`` that converted torchvision-style weights need are set in code, so they
cannot be dropped by a YAML with two ``MODEL:`` keys (defect 4); ResNet-18/34 get a res5 box head of
basic blocks so their pretrained res5 loads (defect 5); EfficientNet/MobileNet get a detection path.

Runs on one process; ``det_norm=syncbn`` is SyncBN on several processes and plain BN (which is what
SyncBN computes there) on one. Evaluation uses the same pycocotools / VOC code as the torchvision
backend (:mod:`downstream.detection.metrics`) on Detectron2's predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import SimpleTrainer, hooks
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone, build_model
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from detectron2.structures import BoxMode
from detectron2.utils.env import seed_all_rng
from tqdm import tqdm

from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.detection.backbones import build_features, load_features_state
from downstream.detection.convert import D2_RESNET_DEPTHS, convert_checkpoint
from downstream.detection.data import DetectionSet
from downstream.detection.metrics import Prediction
from downstream.detection.schedule import Schedule
from downstream.features import pick_device
from pretrain.errors import InputError

# METHOD.md section 5: converted torchvision-style weights expect RGB input normalised like ImageNet.
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
        blocks = ResNet.make_stage(BasicBlock, {18: 2, 34: 3}[depth], stride_per_block=[2] + [1] * ({18: 2, 34: 3}[depth] - 1),
                                   in_channels=out_channels // 2, out_channels=out_channels, norm=cfg.MODEL.RESNETS.NORM)
        return torch.nn.Sequential(*blocks), out_channels


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
    return FPN(bottom_up=bottom_up, in_features=bottom_up._out_features, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type="sum")


def d2_norm(det_norm: str, world_size: int = 1) -> str:
    if det_norm == "syncbn":
        return "SyncBN" if world_size > 1 else "BN"
    return NORM_NAMES[det_norm]


def _anchor_sizes(schedule: Schedule) -> list[float]:
    scale = schedule.test_min_size / 800  # Detectron2's 32..512 px anchors are for 800 px images
    return [max(4.0, s * scale) for s in (32, 64, 128, 256, 512)]


def build_config(cfg: EvalConfig, arch: str, num_classes: int, masks: bool, schedule: Schedule, seed: int,
                 world_size: int = 1) -> CfgNode:
    """The effective Detectron2 config: paper schedule (METHOD.md 5) + what converted weights need."""
    d2 = get_cfg()
    d2.MODEL.TIMM_ARCH = ""  # our key: the timm architecture of the FPN backbone
    d2.MODEL.DEVICE = pick_device(cfg.device).type
    d2.MODEL.MASK_ON = masks
    d2.MODEL.PIXEL_MEAN, d2.MODEL.PIXEL_STD, d2.INPUT.FORMAT = PIXEL_MEAN, PIXEL_STD, "RGB"
    d2.MODEL.BACKBONE.FREEZE_AT = 0  # all parameters fine-tuned
    d2.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    d2.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = schedule.rois_per_image
    norm = d2_norm(cfg.det_norm, world_size)
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
        d2.MODEL.ROI_HEADS.NAME = "BasicBlockRes5ROIHeads"
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
            "FastRCNNConvFCHead", 2, 7)
        d2.MODEL.ROI_MASK_HEAD.NAME, d2.MODEL.ROI_MASK_HEAD.NUM_CONV, d2.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = (
            "MaskRCNNConvUpsampleHead", 4, 14)
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
    d2.SOLVER.CLIP_GRADIENTS.ENABLED = cfg.det_clip_grad > 0
    d2.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    d2.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = cfg.det_clip_grad or 1.0
    d2.DATALOADER.NUM_WORKERS = cfg.workers
    d2.SEED = seed
    d2.OUTPUT_DIR = cfg.out
    d2.freeze()
    return d2


def dataset_dicts(ds: DetectionSet, masks: bool) -> list[dict]:
    """Detectron2's standard dataset dicts; ignored objects (difficult / crowd) carry iscrowd=1."""
    out = []
    for img in ds.images:
        anns = []
        for a in img.annotations:
            ann = {"bbox": list(a.box), "bbox_mode": BoxMode.XYXY_ABS, "category_id": a.category, "iscrowd": int(a.difficult)}
            if masks and a.segmentation:
                ann["segmentation"] = a.segmentation
            anns.append(ann)
        out.append({"file_name": str(img.path), "image_id": img.image_id, "height": img.height, "width": img.width,
                    "annotations": anns})
    return out


def _load_resnet(model, cfg: EvalConfig, seed: int) -> dict:
    """Convert the checkpoint, load it with Detectron2's checkpointer, and insist every backbone and
    res5 weight was found (the heads start random, as in the paper)."""
    pkl = Path(cfg.out) / f"trial-seed{seed}" / "student_detectron2.pkl"
    summary = convert_checkpoint(cfg.ckpt, pkl)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(pkl)))
    missing = [k for k in incompatible.missing_keys if k.startswith(("backbone.", "roi_heads.res5."))]
    if missing:
        raise InputError(f"{pkl}: Detectron2 model has backbone weights the converted file lacks: {', '.join(missing[:6])}")
    return {"converted": summary["out"], "random_init": sorted({k.rsplit(".", 1)[0] for k in incompatible.missing_keys})}


def _load_timm(model, cfg: EvalConfig) -> dict:
    backbone, _ = load_backbone(cfg.ckpt)
    body = model.backbone.bottom_up.body
    dropped = load_features_state(body, backbone.state_dict(), f"checkpoint {cfg.ckpt}")
    if cfg.det_norm == "frozen":
        model.backbone.bottom_up.body = FrozenBatchNorm2d.convert_frozen_batchnorm(body)
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
            self.predictions.append(Prediction(
                inp["image_id"], inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), inst.pred_classes.numpy(),
                inst.pred_masks.numpy().astype(bool) if self.masks else None))

    def evaluate(self):
        return {}


class _Progress(hooks.HookBase):
    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="detection (detectron2)", disable=not enabled, leave=False)

    def after_step(self):
        self.bar.update(1)

    def after_train(self):
        self.bar.close()


def _quiet_detectron2() -> None:
    # Detectron2 logs every config and key table at INFO; the task reports through its records
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.WARNING)


def run_trial(cfg: EvalConfig, train: DetectionSet, test: DetectionSet, masks: bool, schedule: Schedule, seed: int,
              progress: bool) -> tuple[list[Prediction], dict, dict]:
    """Fine-tune with Detectron2's trainer and predict ``test``: (predictions, details, info)."""
    _quiet_detectron2()
    _, info = load_backbone(cfg.ckpt)
    seed_all_rng(seed)
    d2 = build_config(cfg, info["arch"], len(train.classes), masks, schedule, seed)
    model = build_model(d2)
    loaded = _load_resnet(model, cfg, seed) if info["arch"] in D2_RESNET_DEPTHS else _load_timm(model, cfg)
    from detectron2.solver import build_lr_scheduler, build_optimizer

    optimizer = build_optimizer(d2, model)
    loader = build_detection_train_loader(
        dataset_dicts(train, masks), mapper=DatasetMapper(d2, is_train=True), total_batch_size=schedule.batch_size,
        sampler=TrainingSampler(len(train.images), seed=seed), num_workers=cfg.workers,
    )
    trainer = SimpleTrainer(model, loader, optimizer)
    trainer.register_hooks([hooks.IterationTimer(), hooks.LRScheduler(optimizer, build_lr_scheduler(d2, optimizer)),
                            _Progress(schedule.max_iter, progress)])
    trainer.train(0, schedule.max_iter)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    collect = _Collect(masks)
    test_loader = build_detection_test_loader(dataset_dicts(test, masks), mapper=DatasetMapper(d2, is_train=False),
                                              num_workers=cfg.workers)
    inference_on_dataset(model, test_loader, collect)
    details = {"seed": seed, "first_loss": float(losses[0]), "final_loss": float(np.mean(losses[-10:])),
               "norm_effective": d2.MODEL.RESNETS.NORM if info["arch"] in D2_RESNET_DEPTHS else
               ("FrozenBN" if cfg.det_norm == "frozen" else "BN (one process)"),
               "arch_path": "C4" if info["arch"] in D2_RESNET_DEPTHS else "timm+FPN"} | loaded
    return collect.predictions, details, info
