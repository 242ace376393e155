"""Detection and instance segmentation transfer (METHOD.md section 5): the ``detection`` task."""

from downstream.detection.task import run

__all__ = ["run"]
