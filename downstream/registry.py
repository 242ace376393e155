"""The evaluation tasks: name -> module with ``run(cfg: EvalConfig, progress: bool) -> TaskResult``."""

from downstream import linear

TASKS = {
    "linear": linear,
}
