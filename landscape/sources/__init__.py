"""What a surface evaluates: a model and its data, with the key that identifies them.

``ModelSource`` is what ``compute_surface`` takes; ``checkpoint_source`` makes one from a file
(a landscape checkpoint, an ``.onnx`` graph, or a bare state_dict for a ``--model-factory``),
``module_source`` from an ``nn.Module`` and tensors in Python. Beneath them: ``checkpoint``
(the file format, never unpickling), ``safe_load`` (size checks before reading), ``modules``
(module identity and factories) and ``onnx_import`` (graphs converted and checked).
"""

from landscape.sources.checkpoint import file_digest, load_checkpoint, save_checkpoint
from landscape.sources.model_source import ModelSource, checkpoint_source, module_source

__all__ = [
    "ModelSource",
    "checkpoint_source",
    "file_digest",
    "load_checkpoint",
    "module_source",
    "save_checkpoint",
]
