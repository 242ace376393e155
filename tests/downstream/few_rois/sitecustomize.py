"""Run by Python at start-up in a process whose PYTHONPATH starts with this folder
(tests.downstream.detection_helpers.few_rois_pythonpath): the detection steps of that process score
FEW_ROIS RoIs per image, as tests.downstream.detection_helpers.score_few_rois makes them in a test's
own process. It reaches every process a child starts, the ranks of a torchrun job included."""

from downstream.detection import task
from tests.downstream.detection_helpers import few_rois

task.effective_schedule = few_rois(task.effective_schedule)
