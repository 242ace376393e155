"""Detection and instance segmentation transfer (docs/method.md#detection): the ``detection`` task."""

from downstream.detection.task import evaluate

__all__ = ["evaluate"]
