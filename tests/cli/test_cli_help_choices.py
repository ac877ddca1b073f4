"""Every option checked against a spec's ``Literal`` lists all of its values in ``--help``."""

from __future__ import annotations

import argparse
import re
from typing import Any, get_args

import pytest

from landscape.analysis.gradient_flow import Mode
from landscape.cli import build_parser
from landscape.specs import (
    BackendName,
    DeviceName,
    DirectionKind,
    HessianDtype,
    Ignore,
    LossName,
    Normalization,
    OptimizerName,
    Precision,
    ScheduleName,
    Split,
)

# The option (by its destination, in whichever command has it) → the Literal its value is
# checked against (landscape/specs.py's check_choice calls and the commands' own).
CHECKED: dict[str, Any] = {
    "device": DeviceName,
    "precision": Precision,
    "backend": BackendName,
    "directions": DirectionKind,
    "normalization": Normalization,
    "ignore": Ignore,
    "split": Split,
    "splits": Split,
    "loss": LossName,
    "optimizer": OptimizerName,
    "schedule": ScheduleName,
    "dtype": HessianDtype,
    "mode": Mode,
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _checked_options() -> list[tuple[str, str, Any, argparse.Action]]:
    return [
        (command, action.dest, CHECKED[action.dest], action)
        for command, sub in _commands().items()
        for action in sub._actions
        if action.dest in CHECKED
    ]


@pytest.mark.parametrize(
    ("command", "dest", "literal", "action"),
    _checked_options(),
    ids=[f"{command}--{dest}" for command, dest, _, _ in _checked_options()],
)
def test_the_help_lists_every_choice(
    command: str, dest: str, literal: Any, action: argparse.Action
) -> None:
    text = action.help or ""
    missing = [v for v in get_args(literal) if not re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text)]
    assert not missing, f"landscape {command} --{dest} help {text!r} leaves out {missing}"


def test_every_checked_option_and_command_is_covered() -> None:
    found = {(command, dest) for command, dest, _, _ in _checked_options()}
    assert {dest for _, dest in found} == set(CHECKED), "a CHECKED entry matches no option"
    assert ("surface", "normalization") in found and ("serve", "device") in found


def test_no_help_cuts_a_list_short() -> None:
    cut = [
        f"{command} {action.option_strings}: {action.help!r}"
        for command, sub in _commands().items()
        for action in sub._actions
        if action.help and re.search(r",\s*\.\.\.|\.\.\.\s*$", action.help)
    ]
    assert not cut, cut
