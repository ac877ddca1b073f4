"""Exploration mode: every grid point first a stated estimate from a shared subsample of each
split, refined where it changes the picture, exact on demand (docs/format.md, "Estimated
surfaces").

``spec`` (what is asked), ``permutation`` (the shared order and its stages), ``estimator``
(the control-variate estimate and its standard error), ``stopping`` (when a point stops,
which point samples next), ``prefix_engine`` (sums over a slice at K points per call) and
``run`` (the surface loop, ``compute_estimated_surface``). This package's own imports are
light: storage reads estimates through ``spec`` and ``estimator`` alone.
"""

from landscape.explore.spec import EstimateSpec, parse_target

__all__ = ["EstimateSpec", "parse_target"]
