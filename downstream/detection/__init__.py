"""Detection and instance segmentation transfer (docs/method.md#detection): the ``detection`` task."""

from downstream.detection.task import evaluate, run

__all__ = ["evaluate", "run"]
