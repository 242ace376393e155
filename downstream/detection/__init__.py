"""Detection and instance segmentation transfer (docs/method.md#detection): the ``detection`` task."""

from downstream.detection.task import run

__all__ = ["run"]
