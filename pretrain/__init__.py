"""Pre-training: backbones and heads, teacher loading, methods, and the training loop."""
