"""disco-bench: a harness for self-supervised distillation of lightweight vision models."""

__version__ = "0.1.0"
