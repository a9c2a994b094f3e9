"""Every numeric option of `cnnlab federated simulate|server|client`, given hostile values, exits
2 with one ``error:`` line before any data is read or any process starts (the options come
from the parser, so a new one joins by existing)."""

from __future__ import annotations

import argparse

import pytest

from cli_helpers import error_line
from cnnlab.cli.main import build_parser, main

VALUES = {int: ("nan", "-1", "x" * 5000), float: ("nan", "1e400", "-1")}
REQUIRED = {"client": ["--partition-id", "0"]}


def _cases() -> list[tuple[str, str, str]]:
    parser = build_parser()
    federated = parser.verbs["federated"]  # type: ignore[attr-defined]
    actions = next(a for a in federated._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for name, sub in actions.choices.items():
        for action in sub._actions:
            if action.type in VALUES and action.option_strings:
                flag = max(action.option_strings, key=len)
                cases += [(name, flag, v) for v in VALUES[action.type]]
    return cases


CASES = _cases()


def test_the_corpus_covers_the_options() -> None:
    flags = {(a, f) for a, f, _ in CASES}
    assert {("simulate", "--rounds"), ("simulate", "--noise-multiplier"), ("server", "--port"),
            ("client", "--partition-id"), ("client", "--max-wait")} <= flags
    assert len(flags) >= 40


@pytest.mark.parametrize(("action", "flag", "value"), CASES,
                         ids=[f"{a}{f}={v[:8]}" for a, f, v in CASES])
def test_hostile_values_are_refused(action: str, flag: str, value: str, tmp_path,
                                    monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["federated", action, *REQUIRED.get(action, []), flag, value, "--data-dir",
            str(tmp_path / "no-data")]
    assert main(argv) == 2
    line = error_line(capsys)
    assert flag in line or flag.lstrip("-").replace("-", "_") in line, line
