"""Checkpoints that load without unpickling: plain dicts of tensors and JSON-like values.

Our format (``torch.save`` of a dict, read back with ``weights_only=True``)::

    {"format": "landscape-checkpoint/1", "model": name, "model_args": {...},
     "state_dict": {...}, "metadata": {...}}

A ``.safetensors`` file holds the same: tensors as the state dict, the rest as JSON strings in
its header. A bare ``state_dict`` (someone else's training) loads when the caller names the zoo
model. Every failure is a ``CheckpointError`` that says what was wrong and what would work.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from landscape.errors import CheckpointError, LandscapeError
from landscape.models import build, list_models
from landscape.sources.safe_load import is_zip_archive

FORMAT = "landscape-checkpoint/1"


def _name(path: str | Path) -> str:
    """How errors name a checkpoint: its file name, never the folder it lives in (a service's
    messages must not reveal its paths)."""
    return Path(path).name


SAFETENSORS_SUFFIX = ".safetensors"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_args: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written file."""
    path = Path(path)
    model_args, metadata = _plain(model_args, "model_args"), _plain(metadata, "metadata")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        header = {
            "format": FORMAT,
            "model": model_name,
            "model_args": json.dumps(dict(model_args)),
            "metadata": json.dumps(dict(metadata)),
        }
        contiguous = {key: value.contiguous() for key, value in state_dict.items()}
        _atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=header))
    else:
        payload = {
            "format": FORMAT,
            "model": model_name,
            "model_args": dict(model_args),
            "state_dict": state_dict,
            "metadata": dict(metadata),
        }
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def _plain(value: Any, where: str) -> Any:
    """Plain types only, so ``weights_only`` loading accepts the file (``torch.__version__``
    is a str subclass it would refuse; numpy scalars become Python numbers)."""
    if value is None:
        return None
    for kind in (bool, str, int, float):  # bool before int: bool is an int subclass
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()  # a numpy scalar
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}; checkpoints store only plain values "
        "(None, bool, int, float, str, lists, dicts, tensors)"
    )


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The raw content, never unpickled: torch's ``weights_only`` loader, or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {_name(path)} does not exist")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            return _read_safetensors(path, map_location)
        return torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt, truncated, or holding objects we refuse to unpickle
        raise CheckpointError(
            f"cannot read checkpoint {_name(path)}: {_why_unreadable(path, exc)} "
            "(expected a landscape "
            "checkpoint, a state_dict saved with torch.save, or a .safetensors file)"
        ) from exc


def recorded_model(path: str | Path) -> str | None:
    """The model name a landscape checkpoint records (``landscape train`` writes it), or None
    for a bare state_dict; read as every checkpoint is, never unpickled (``weights_only``)."""
    content = read_checkpoint_file(path)
    if isinstance(content, dict) and content.get("format") == FORMAT:
        _check_layout(content, path)
        return str(content["model"])
    return None


def _why_unreadable(path: Path, exc: Exception) -> str:
    """Say what is wrong without torch's advice to turn off ``weights_only``."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return f"not a valid safetensors file ({type(exc).__name__})"
    if not is_zip_archive(path):
        return "not a torch checkpoint (corrupt, truncated or another format)"
    if "weights only" in str(exc).lower():
        return (
            "it holds Python objects other than tensors and plain values, which are never unpickled"
        )
    return "corrupt or truncated torch checkpoint"


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        header = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if header.get("format") != FORMAT:
        return tensors  # a bare state_dict
    return {
        "format": FORMAT,
        "model": header["model"],
        "model_args": json.loads(header.get("model_args", "{}")),
        "state_dict": tensors,
        "metadata": json.loads(header.get("metadata", "{}")),
    }


def load_checkpoint(
    path: str | Path,
    *,
    model_name: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    model_factory: str | Callable[..., nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model and load its weights; returned in eval mode with its metadata.

    For our own files, ``model_args`` overrides stored arguments (e.g. a data set's class
    count), so a mismatch surfaces here as a clear error rather than later as a shape error.
    A checkpoint of ``landscape train --model-factory pkg.mod:fn`` holds weights only: pass
    ``model_factory`` (that ``"pkg.mod:fn"`` or the callable) to rebuild its module with the
    stored arguments; without it the error names the factory and this argument.
    """
    content = read_checkpoint_file(path, map_location)
    if isinstance(content, dict) and content.get("format") == FORMAT:
        _check_layout(content, path)
        name = str(content["model"])
        if model_name is not None and model_name != name:
            raise CheckpointError(
                f"checkpoint {_name(path)} holds model {name!r}, not the requested {model_name!r}"
            )
        args = {**content.get("model_args", {}), **(model_args or {})}
        state_dict = content["state_dict"]
        metadata = dict(content.get("metadata", {}))
    elif isinstance(content, dict) and content.get("format") is not None:
        raise CheckpointError(
            f"checkpoint {_name(path)} has format {content.get('format')!r}; "
            f"this version reads {FORMAT!r}"
        )
    else:
        state_dict = _bare_state_dict(content, path)
        if model_name is None:
            raise CheckpointError(
                f"{_name(path)} is a bare state_dict; name its model (one of: "
                f"{', '.join(m.name for m in list_models())})"
            )
        name, args, metadata = model_name, dict(model_args or {}), {}
    model = _build(name, args, path, model_factory)
    _load_weights(model, state_dict, name, args, path)
    model.eval()
    metadata.setdefault("model", name)
    metadata["model_args"] = args
    return model, metadata


def import_checkpoint(
    source: str | Path,
    out: str | Path,
    *,
    model_name: str,
    model_args: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn a checkpoint (a bare ``state_dict`` of a zoo model, a ``.safetensors`` file or our
    own format) into our own format at ``out``; returns the metadata written.

    ``model_args`` (e.g. the data set's channels, classes and image size) builds the model a
    bare state dict is loaded into; loading checks every shape, so a file that does not fit
    the model fails here with a ``CheckpointError``, never later. JSON-unsafe metadata values
    (NaN) are written as text by ``save_checkpoint``'s checks.
    """
    model, loaded = load_checkpoint(source, model_name=model_name, model_args=model_args)
    written = {**loaded, **(metadata or {})}
    written.setdefault("source_sha256", file_digest(source))
    save_checkpoint(
        out,
        model,
        model_name=model_name,
        model_args=written.get("model_args", dict(model_args)),
        metadata=written,
    )
    return written


def _check_layout(content: dict[str, Any], path: str | Path) -> None:
    """Our format's fields have the types the loader relies on (a file is untrusted data)."""
    required: dict[str, type] = {"model": str, "state_dict": dict}
    optional: dict[str, type] = {"model_args": dict, "metadata": dict}
    for key, kind in {**required, **optional}.items():
        if not isinstance(content.get(key, None if key in required else kind()), kind):
            raise CheckpointError(
                f"checkpoint {_name(path)} is malformed: {key!r} must be a {kind.__name__}"
            )
    if not all(isinstance(value, Tensor) for value in content["state_dict"].values()):
        raise CheckpointError(
            f"checkpoint {_name(path)} is malformed: a state_dict entry is not a tensor"
        )


def _bare_state_dict(content: Any, path: str | Path) -> dict[str, Tensor]:
    """Accept ``{name: tensor}``, or one nested under a common key, minus a DataParallel prefix."""
    if isinstance(content, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content:
        raise CheckpointError(f"{_name(path)} holds no state_dict (got {type(content).__name__})")
    if not all(isinstance(value, Tensor) for value in content.values()):
        bad = next(key for key, value in content.items() if not isinstance(value, Tensor))
        raise CheckpointError(f"{_name(path)} is not a state_dict: entry {bad!r} is not a tensor")
    if all(str(key).startswith("module.") for key in content):
        content = {str(key)[len("module.") :]: value for key, value in content.items()}
    return cast("dict[str, Tensor]", content)  # every value was checked to be a Tensor above


def _build(
    name: str,
    args: dict[str, Any],
    path: str | Path,
    factory: str | Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """The checkpoint's module: from ``factory`` when given, else from the zoo (or a plugin);
    a factory's name the zoo does not know is an error saying how to pass the factory."""
    from landscape.sources.factory import build_from_factory, load_factory

    if factory is not None:
        label = factory if isinstance(factory, str) else getattr(factory, "__name__", "factory")
        made = load_factory(factory) if isinstance(factory, str) else factory
        return build_from_factory(made, label, **args)
    if ":" in name and name not in {info.name for info in list_models()}:
        shown = ", ".join(f"{key}={value!r}" for key, value in args.items())
        raise CheckpointError(
            f"checkpoint {_name(path)} holds the weights of --model-factory {name!r} (your "
            f"code, not a zoo model; trained with {shown or 'no arguments'}): rebuild it with "
            f"load_checkpoint(path, model_factory={name!r}), or on the command line "
            f"--model-factory {name}, with {name.split(':')[0]!r} importable"
        )
    try:
        return build(name, **args)
    except (LandscapeError, TypeError, ValueError) as exc:  # the file's model_args do not fit
        raise CheckpointError(f"cannot rebuild the model of {_name(path)}: {exc}") from exc


def _load_weights(
    model: nn.Module, state_dict: Mapping[str, Tensor], name: str, args: dict[str, Any], path: Any
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{_name(path)} does not fit model {name!r}: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}"
        )
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            hint = ""
            if key.endswith("weight") and value.ndim == 2 and key == _last_linear(expected):
                hint = (
                    f" — the checkpoint has {value.shape[0]} classes, the model "
                    f"{expected[key].shape[0]} (num_classes={args.get('num_classes')})"
                )
            raise CheckpointError(
                f"{_name(path)} does not fit model {name!r}: {key!r} has shape "
                f"{tuple(value.shape)} "
                f"in the checkpoint but {tuple(expected[key].shape)} in the model{hint}"
            )
    model.load_state_dict(state_dict)


def _last_linear(state_dict: Mapping[str, Tensor]) -> str | None:
    keys = [key for key, value in state_dict.items() if key.endswith("weight") and value.ndim == 2]
    return keys[-1] if keys else None


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    return ", ".join(repr(k) for k in keys[:3]) + (
        f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    )


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes: the checkpoint part of a surface's cache key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
