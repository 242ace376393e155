"""Downstream tasks. Add one: write a module with ``run(cfg: EvalConfig, progress) -> TaskResult``
and add one line to TASKS (see downstream/registry.py)."""
