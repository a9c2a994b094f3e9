"""Helpers shared by the CLI tests."""

from __future__ import annotations

import pytest


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error: ...`` line a failed command printed last, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err  # (info lines such as "device auto: ..." may come before)
    assert err.rstrip().endswith(errors[0])
    return errors[0]
