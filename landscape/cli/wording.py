"""Library messages in the words the user typed: flags for spec fields, paths as given.

The library speaks of its specs' fields (``x_range``) and, so a service never shows its
folders, names files by their name alone; a CLI user typed ``--range`` and ``cache/w.pt``.
A command translates once, around its calls into the library (``in_user_words``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

from landscape.errors import CheckpointError, SpecError, SurfaceFileError

# Spec fields → the flags that set them (``landscape surface``, ``hessian``, ``train``,
# ``gradient-flow``).
FIELD_FLAGS: Mapping[str, str] = {
    "x_range": "--range",
    "y_range": "--yrange",
    "z_range": "--zrange",
    "n_x": "--grid",
    "n_y": "--grid-y",
    "n_z": "--grid-z",
    "batch_size": "--batch-size",
    "train_size": "--train-size",
    "test_size": "--test-size",
    "target_checkpoint": "--target",
    "through_checkpoints": "--through",
}

# What each precision means, beside its name in every command's --precision help.
PRECISION_NOTES: Mapping[str, str] = {
    "auto": "tf32 on CUDA, fp32 on CPU",
    "fp32": "strict",
    "bf16": "CUDA only",
}

# Only these are rebuilt from a message; others (``UnknownNameError``) already say it right.
_TRANSLATED = (SpecError, SurfaceFileError, CheckpointError)


def user_words(
    message: str, paths: Iterable[str | Path | None] = (), flags: Mapping[str, str] = FIELD_FLAGS
) -> str:
    """``message`` with each field (also dotted, ``grid.n_x``) as its flag and each file
    named by its name alone as the path it was typed as."""
    fields = "|".join(re.escape(f) for f in flags)
    message = re.sub(rf"\b(?:[a-z]+\.)?({fields})\b", lambda m: flags[m.group(1)], message)
    for path in paths:
        if path is None or str(path) == Path(path).name:
            continue
        name = re.escape(Path(path).name)
        message = re.sub(rf"(?<![\w/.-]){name}(?![\w-]|\.\w)", str(path), message)
    return message


@contextmanager
def in_user_words(
    paths: Iterable[str | Path | None] = (), flags: Mapping[str, str] = FIELD_FLAGS
) -> Iterator[None]:
    """Re-raise the library's spec, checkpoint and surface-file errors in ``user_words``."""
    typed = list(paths)
    try:
        yield
    except _TRANSLATED as exc:
        if type(exc) not in _TRANSLATED:
            raise
        message = user_words(str(exc), typed, flags)
        if message == str(exc):
            raise
        raise type(exc)(message) from exc


def require_file(path: str | Path, what: str) -> None:
    """A missing input named as typed, before the library opens it (and names it briefly)."""
    if not Path(path).is_file():
        error = SurfaceFileError if what == "surface file" else CheckpointError
        raise error(f"{what} {path} does not exist")


def choices_text(literal: Any, notes: Mapping[str, str] | None = None, last: str = "or") -> str:
    """Every value of the ``Literal`` an option is checked against, for its help
    (``filter, layer, weight, global or none``), each with its note in brackets: the help
    lists what the check accepts, never a copy that drifts from it."""
    values = [str(value) for value in get_args(literal)]
    notes = notes or {}
    assert set(notes) <= set(values), f"notes for values not in {values}: {sorted(notes)}"
    words = [f"{value} ({notes[value]})" if value in notes else value for value in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"
