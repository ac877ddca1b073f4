"""The HDF5 surface file: the contract between the worker, the API, the web page and users.

Layout and every attribute are documented in ``docs/format.md``; this package is its only
writer. ``keys`` says what identifies a surface, ``grid`` how points are laid out, ``order`` in
which order they are computed (coarse to fine), ``hdf5`` how files are opened and swapped
atomically, ``journal`` how chunks are appended cheaply, ``surface_file`` how a file is
created and read, ``writer`` how it changes after creation, and ``summary`` what a surface is
without its arrays.
"""

from landscape.storage.estimate import (
    SurfaceEstimate,
    estimate_key,
    stored_estimate,
)
from landscape.storage.estimate import spec_json as estimate_spec_json
from landscape.storage.grid import flat_coordinates, grid_coordinates, grid_shape, z_coordinates
from landscape.storage.journal import journal_path
from landscape.storage.keys import FORMAT, surface_key
from landscape.storage.order import in_point_order, point_order
from landscape.storage.summary import Provenance, SurfaceInfo, describe
from landscape.storage.surface_file import (
    Group,
    Surface,
    Trajectory,
    check_matches,
    create_surface_file,
    missing_points,
    read_directions,
    read_surface,
)
from landscape.storage.writer import (
    SurfaceWriter,
    fold_journal,
    mark_complete,
    read_group,
    set_aside,
    write_group,
    write_points,
)

__all__ = [
    "FORMAT",
    "Group",
    "Provenance",
    "Surface",
    "SurfaceEstimate",
    "SurfaceInfo",
    "SurfaceWriter",
    "Trajectory",
    "check_matches",
    "create_surface_file",
    "describe",
    "estimate_key",
    "estimate_spec_json",
    "flat_coordinates",
    "fold_journal",
    "grid_coordinates",
    "grid_shape",
    "in_point_order",
    "journal_path",
    "mark_complete",
    "missing_points",
    "point_order",
    "read_directions",
    "read_group",
    "read_surface",
    "set_aside",
    "stored_estimate",
    "surface_key",
    "write_group",
    "write_points",
    "z_coordinates",
]
