"""The exception tree of landscape.

Every error a user can cause is a ``LandscapeError``; its message names the bad value and what
would be valid. The shells translate the tree once, at their boundary:

    LandscapeError                    CLI: "error: <message>", exit 2 | API: 400
    ├── UnknownNameError              unknown model, data set, option value   | API: 422
    ├── SpecError                     bad grid/range/option combination       | API: 422
    ├── DatasetNotFoundError          data files missing under the data root  | API: 422
    ├── CheckpointError               unreadable, corrupt or mismatched file  | API: 422
    │   └── ModelFormatError          an uploaded model that is not a valid graph of an
    │       │                         accepted format, or whose conversion is not exact | 422
    │       └── UnsafeModelError      one that asks for something refused for safety:
    │                                 custom ops, external data, functions, too big | 422
    ├── SurfaceFileError              unreadable HDF5 surface, or a partial
    │                                 file whose spec differs from the request | API: 409
    ├── DivergedError                 a loss that is no longer finite: a training that
    │                                 diverged, a surface that is NaN everywhere | API: 422
    └── CancelledError                a job's stop flag was raised mid-run    | API: (job state)

Internal invariants use ``assert``; anything else escaping is a bug.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """Base of every error a user can cause."""


class UnknownNameError(LandscapeError, ValueError):
    """A name (model, data set, option) that is not one of the known choices."""

    def __init__(self, kind: str, name: object, choices: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.choices = kind, name, list(choices)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.choices)}")


class SpecError(LandscapeError, ValueError):
    """A request whose values are individually known but do not make sense together."""


class DatasetNotFoundError(LandscapeError, FileNotFoundError):
    """A data set's files are not where they should be (and downloading was not asked for)."""


class CheckpointError(LandscapeError):
    """A checkpoint that cannot be read, or does not fit the model/data it is used with."""


class SurfaceFileError(LandscapeError):
    """An HDF5 surface file that cannot be read, or does not match the request."""


class DivergedError(LandscapeError):
    """The loss went to NaN or infinity: a result nobody can use, so the work stops and
    says where, instead of finishing with a blank surface."""


class CancelledError(LandscapeError):
    """Work stopped because its caller asked it to; finished points are kept."""


class ModelFormatError(CheckpointError):
    """A model file (an upload) that cannot be parsed, checked or converted exactly."""


class UnsafeModelError(ModelFormatError):
    """A model file that needs what an upload may not have: code, custom operators, data read
    from other files, or more size than the service accepts."""
