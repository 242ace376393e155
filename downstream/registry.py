"""The evaluation tasks: name -> module whose entry is
``evaluate(cfg: EvalConfig, progress: bool) -> TaskResult`` (``progress``: show progress bars).

A task's module is imported when the task is looked up, so listing the names imports no torch.
"""

from infra.lazy_registry import LazyRegistry

TASKS = LazyRegistry(
    {
        "linear": "downstream.linear",
        "semisup": "downstream.semisup",
        "cifar": "downstream.cifar",
        "knn": "downstream.knn",
        "tsne": "downstream.tsne",
        "mi": "downstream.mi",
        "detection": "downstream.detection",
    }
)
