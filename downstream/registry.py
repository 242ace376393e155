"""The evaluation tasks: name -> module with ``run(cfg: EvalConfig, progress: bool) -> TaskResult``."""

from downstream import cifar, detection, knn, linear, mi, semisup, tsne

TASKS = {
    "linear": linear,
    "semisup": semisup,
    "cifar": cifar,
    "knn": knn,
    "tsne": tsne,
    "mi": mi,
    "detection": detection,
}
