"""torchvision backend (the embedded default): Faster R-CNN (VOC) or Mask R-CNN (COCO) on an FPN over
the student's timm feature maps, every parameter fine-tuned; under torchrun with DDP, the global
batch split over the processes (:mod:`downstream.detection.distributed`).

Images are resized by the model's own transform to the schedule's short side (train: drawn from
the schedule's range per image; test: ``test_min_size``), normalised with ImageNet mean/std as in
pre-training. Anchor sizes scale with the test size (32..512 px at 800 px, torchvision's FPN default).
Crowd regions are left out of training; VOC ``difficult`` objects are trained on (Detectron2's VOC
loader keeps them too). With BatchNorm in train mode (``det_norm`` syncbn/bn), PreciseBN replaces the
running statistics after training by the average over ``schedule.precise_bn_iters`` training
batches, as in MoCo's detection config.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from downstream.config import EvalConfig
from downstream.detection.backbones import freeze_batchnorm, load_features
from downstream.detection.data import DetectionSet, ImageRecord
from downstream.detection.distributed import (
    gather_on_main,
    join,
    per_process_batch,
    rank_seed,
    share_from_main,
    sync_batchnorm,
    test_shard,
    wrap_ddp,
)
from downstream.detection.metrics import Prediction, encode_masks
from downstream.detection.schedule import Schedule, diverged, loss_curve
from infra.distributed import pick_device
from infra.errors import InputError
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.data import too_large

FPN_CHANNELS = 256


class TimmFPN(nn.Module):
    """timm ``features_only`` body + torchvision FPN (+ a max-pooled extra level, as in Mask R-CNN)."""

    def __init__(self, body: nn.Module, out_channels: int = FPN_CHANNELS):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels  # read by torchvision's detectors

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def build_detector(body: nn.Module, num_classes: int, masks: bool, schedule: Schedule) -> nn.Module:
    """Faster R-CNN (or Mask R-CNN if ``masks``) with ``num_classes`` foreground classes."""
    base = schedule.test_min_size / 25  # 32 px at the paper's 800 px
    anchors = AnchorGenerator(tuple((max(2.0, base * 2**i),) for i in range(5)), ((0.5, 1.0, 2.0),) * 5)
    kwargs = dict(
        num_classes=num_classes + 1,  # + background
        min_size=tuple(range(schedule.train_min_size[0], schedule.train_min_size[1] + 1)),
        max_size=schedule.max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        box_batch_size_per_image=schedule.rois_per_image,
        rpn_post_nms_top_n_train=schedule.proposals_per_image,
        rpn_pre_nms_top_n_train=schedule.proposals_per_image,
        rpn_pre_nms_top_n_test=schedule.test_proposals_per_image,
        rpn_post_nms_top_n_test=schedule.test_proposals_per_image,
        box_detections_per_img=schedule.detections_per_image,
    )
    backbone = TimmFPN(body)
    if masks:
        return MaskRCNN(backbone, mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2), **kwargs)
    return FasterRCNN(backbone, **kwargs)


def _load_image(record: ImageRecord) -> torch.Tensor:
    try:
        with Image.open(record.path) as im:
            return pil_to_tensor(im.convert("RGB")).float() / 255.0
    except Image.DecompressionBombError as exc:
        raise too_large(record.path, exc) from exc
    except OSError as exc:
        raise InputError(f"{record.path}: not a readable image ({exc})") from exc


def _decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


class DetectionTrainData(Dataset):
    """(image in [0, 1], target) pairs; crowd regions are left out of training; random horizontal
    flip with probability 0.5."""

    def __init__(self, ds: DetectionSet, masks: bool, seed: int):
        self.ds, self.masks = ds, masks
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.ds.images)

    def __getitem__(self, i: int):
        record = self.ds.images[i]
        image = _load_image(record)
        anns = [a for a in record.annotations if not a.crowd]
        boxes = torch.tensor([a.box for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.tensor([a.category + 1 for a in anns], dtype=torch.int64)}
        if self.masks:
            target["masks"] = torch.from_numpy(
                np.stack([_decode_mask(a.segmentation, record.height, record.width) for a in anns])
                if anns
                else np.zeros((0, record.height, record.width), np.uint8)
            )
        if self.rng.random() < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            target["boxes"] = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
            )
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def _collate(batch):
    return tuple(zip(*batch))


def _train_loader(ds: DetectionSet, masks: bool, batch_size: int, batches: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(
        DetectionTrainData(ds, masks, seed),
        replacement=True,
        num_samples=batches * batch_size,
        generator=generator,
    )
    return DataLoader(sampler.data_source, batch_size=batch_size, sampler=sampler, collate_fn=_collate)


def train_detector(
    model: nn.Module, ds: DetectionSet, masks: bool, schedule: Schedule, seed: int, progress: bool
) -> list[float]:
    """SGD over ``schedule``; returns the total loss of every iteration."""
    loader = _train_loader(ds, masks, schedule.batch_size, schedule.max_iter, seed)
    clip_grad = schedule.clip_grad
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.lr_factor)
    model.train()
    losses = []
    bar = tqdm(loader, total=schedule.max_iter, desc="detection", disable=not progress, leave=False)
    device = next(model.parameters()).device
    for it, (images, targets) in enumerate(bar):
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise diverged(it + 1, {k: v.item() for k, v in loss_dict.items()}, schedule, clip_grad)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad > 0:
            nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


@torch.no_grad()
def precise_bn(model: nn.Module, ds: DetectionSet, masks: bool, schedule: Schedule, seed: int) -> int:
    """Set every train-mode BatchNorm's running statistics to their average over
    ``schedule.precise_bn_iters`` training batches (PreciseBN); returns the number of BN layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or schedule.precise_bn_iters < 1:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    device = next(model.parameters()).device
    for images, targets in _train_loader(ds, masks, schedule.batch_size, schedule.precise_bn_iters, seed + 1):
        batch, _ = model.transform(
            [im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets]
        )
        model.backbone(batch.tensors)  # BatchNorm lives in the backbone body only
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return len(layers)


@torch.no_grad()
def predict(
    model: nn.Module, ds: DetectionSet, masks: bool, schedule: Schedule, batch_size: int = 4
) -> list[Prediction]:
    """Detections (in original image coordinates) for every image of ``ds``."""
    model.eval()
    model.transform.min_size = (schedule.test_min_size,)
    out = []
    for start in range(0, len(ds.images), batch_size):
        records = ds.images[start : start + batch_size]
        device = next(model.parameters()).device
        for record, det in zip(records, model([_load_image(r).to(device) for r in records])):
            det = {k: v.cpu() for k, v in det.items()}
            out.append(
                Prediction(
                    record.image_id,
                    det["boxes"].numpy(),
                    det["scores"].numpy(),
                    det["labels"].numpy() - 1,
                    encode_masks((det["masks"][:, 0] > 0.5).numpy()) if masks else None,
                )
            )
    return out


def fine_tune_and_predict(
    cfg: EvalConfig,
    train: DetectionSet,
    test: DetectionSet,
    masks: bool,
    schedule: Schedule,
    seed: int,
    progress: bool,
) -> tuple[list[Prediction] | None, dict, dict]:
    """Fine-tune a fresh detector from ``cfg.ckpt`` on ``train``, predict ``test``: (predictions, details, info)."""
    body, info = load_features(cfg.ckpt)  # reloaded per trial: fine-tuning changes the weights
    torch.manual_seed(seed)  # the FPN and heads start from the same random init for the same seed
    if cfg.det_norm == "frozen":
        body = freeze_batchnorm(body)
    procs, device = join(pick_device(cfg.device))  # under torchrun: one of N DDP processes
    detector = build_detector(body, len(train.classes), masks, schedule)
    model, norm = sync_batchnorm(detector, cfg.det_norm, procs, device)
    model = model.to(device)
    # this process's share of the global batch, and its own draw of the images
    local = dataclasses.replace(schedule, batch_size=per_process_batch(schedule.batch_size, procs))
    data_seed = rank_seed(seed, procs)
    losses = train_detector(
        wrap_ddp(model, procs, device), train, masks, local, data_seed, progress and procs.is_main
    )
    bn_layers = precise_bn(model, train, masks, local, data_seed)
    # each rank predicts its share of the test set with the weights DDP kept equal everywhere
    predictions = gather_on_main(predict(model, test_shard(test, procs), masks, schedule), test, procs)
    details = {
        "seed": seed,
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
        "loss_curve": loss_curve(losses),
        "precise_bn_layers": bn_layers,
        "norm_effective": norm,
    }
    return predictions, share_from_main(details, procs), info
