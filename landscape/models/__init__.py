"""The model zoo: builders registered by name, so specs, checkpoints and the API name models.

A builder takes the data set's shape (``in_channels``, ``num_classes``, ``image_size``) plus
model-specific keyword arguments; each model declares the data it accepts (``spatial_dims``: 2
for images, 1 for signals, whose length ``image_size`` then is), so a mismatch is refused by
name before anything is built; ``build`` records the name and every argument on the module
(``landscape_model``) so a checkpoint can rebuild exactly the same network. Installed packages
add builders through the ``landscape.models`` entry-point group (``landscape.models.plugins``);
they are loaded on the first lookup and then listed and built like the zoo's own. The
registry is ``landscape.models.registry``; importing this package registers every family.
"""

from __future__ import annotations

# Importing the families registers them.
from landscape.models import (
    densenet,
    highway,
    mlp,
    recurrent,
    resnet,
    resnet1d,
    transformer,
)
from landscape.models.registry import _REGISTRY as _REGISTRY  # the table itself, for tests
from landscape.models.registry import (
    SHAPE_KEYS,
    ModelInfo,
    build,
    check_model_args,
    list_models,
    model_identity,
    model_spatial_dims,
    register_model,
)

__all__ = [
    "SHAPE_KEYS",
    "ModelInfo",
    "build",
    "check_model_args",
    "densenet",
    "highway",
    "list_models",
    "mlp",
    "model_identity",
    "model_spatial_dims",
    "recurrent",
    "register_model",
    "resnet",
    "resnet1d",
    "transformer",
]
