"""What every CLI test checks of a user error: one line on stderr, starting ``error: ``."""

from __future__ import annotations

import pytest


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error: …`` line the command printed (no traceback), for matching."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
