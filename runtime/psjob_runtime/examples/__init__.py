"""Runnable examples: `python -m psjob_runtime.examples.digits` and `...examples.mnist_cnn`."""
