"""An analysis stored in a surface file must be of the model the surface was computed from."""

from __future__ import annotations

from pathlib import Path

from landscape.errors import CheckpointError
from landscape.storage import Surface, read_surface


def surface_of_checkpoint(
    checkpoint: str | Path, digest: str, surface: str | Path | None
) -> Surface | None:
    """The surface at ``surface`` (None without one), whose recorded checkpoint sha256 must be
    ``digest``: numbers of one model stored beside the plot of another would mislead."""
    if surface is None:
        return None
    stored = read_surface(surface)
    expected = str(stored.attrs.get("checkpoint_sha256", ""))
    if digest != expected:
        raise CheckpointError(
            f"checkpoint {Path(checkpoint).name} is not the one surface "
            f"{Path(surface).name} was computed from (sha256 {expected[:12]}…)"
        )
    return stored
