"""``python -m bench.estimates --only``: the named jobs and the surfaces they analyse."""

from __future__ import annotations

import pytest

from bench.estimates import MIX, selected


def test_only_runs_the_named_jobs_after_the_surfaces_they_analyse() -> None:
    names = [job[0] for job in selected(["sharpness", "hessian-top10"])]
    assert names == ["form", "highway-pca", "hessian-top10", "sharpness"]  # MIX's order
    assert [job[0] for job in selected(["tiny"])] == ["tiny"]
    assert selected(None) == list(MIX)


def test_an_unknown_name_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(SystemExit, match="unknown job hessian-top; the jobs: tiny, form"):
        selected(["hessian-top"])
