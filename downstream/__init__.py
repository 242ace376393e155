"""Downstream tasks. Add one: write a module with ``evaluate(cfg: EvalConfig, progress) -> TaskResult``
(``progress``: show progress bars) and add one line to TASKS (see downstream/registry.py)."""
