"""Evaluating grid points: the loss and accuracy of ``θ + x·δ + y·η`` for many ``(x, y)``.

``make_evaluator`` is what the surface loop calls: a ``GridEvaluator`` (this process and its
worker processes, ``evaluator``) or a ``RayEvaluator`` (``ray_backend``), both with ``imap``,
``describe`` and ``close``. Beneath them: ``plan`` chooses device, precision, batch size, points
per call and compile from measurements; ``point_evaluator`` is the per-process core, over
``batches`` (a split as equal-shaped padded batches) and ``forward`` (the per-batch functions,
compiled once per process); ``precision`` is the one precision policy of every CUDA path;
``pool`` the worker processes; ``bn_fold`` folds eval-mode BatchNorm into the weights and
directions; ``regression`` evaluates real-valued targets; ``reference`` is the naive per-point
loop that tests and benchmarks compare against.
"""

from landscape.engine.backend import Evaluator, make_evaluator
from landscape.engine.devices import resolve_device
from landscape.engine.evaluator import GridEvaluator
from landscape.engine.reference import reference_evaluate

__all__ = ["Evaluator", "GridEvaluator", "make_evaluator", "reference_evaluate", "resolve_device"]
