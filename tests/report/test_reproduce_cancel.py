"""A report cancelled while it measures a net's analyses stops inside them: the Hessian
products ask ``should_stop`` too, so no analysis of that net is finished and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from landscape.errors import CancelledError
from landscape.report.reproduce import reproduce
from tests.report.test_reproduce import TINY


def test_a_cancel_during_the_analyses_stops_them(tmp_path: Path) -> None:
    stages: list[str] = []

    def on_progress(what: str, done: int, total: int) -> None:
        stages.append(what)

    def should_stop() -> bool:  # the cancel arrives once the first net's analyses began
        return any(stage.startswith("Hessian") for stage in stages)

    with pytest.raises(CancelledError, match="Hessian analysis stopped after 0 products"):
        reproduce(TINY, tmp_path, on_progress=on_progress, should_stop=should_stop)
    assert sum(stage.startswith("Hessian") for stage in stages) == 1
    assert list((tmp_path / "analysis").glob("*.json")) == []  # nothing measured was kept
