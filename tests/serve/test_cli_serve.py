"""``cnnlab serve``'s options: every number finite and in range, the port free (issue 14
sections 2 and 4); refused with exit 2 and one ``error:`` line, before any model loads."""

from __future__ import annotations

import socket

import pytest

from cnnlab.cli.main import main


@pytest.mark.parametrize(("flags", "words"), [
    (["--max-batch-delay-ms", "nan"], "--max-batch-delay-ms"),
    (["--max-batch-delay-ms", "inf"], "--max-batch-delay-ms"),
    (["--max-batch-delay-ms", "-1"], "--max-batch-delay-ms"),
    (["--port", "99999"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "0"], "--port"),
    (["--max-batch-size", "0"], "--max-batch-size"),
    (["--max-body-mb", "nan"], "--max-body-mb"),
    (["--max-body-mb", "0"], "--max-body-mb"),
    (["--engine-threads", "-2"], "--engine-threads"),
    (["--decode-timeout-s", "inf"], "--decode-timeout-s"),
    (["--decode-workers", "0"], "--decode-workers"),
    (["--max-pixels", "0"], "--max-pixels"),
    (["--feedback-memory-mb", "-1"], "--feedback-memory-mb"),
    (["--drift-window", "0"], "--drift-window"),
    (["--port", "eighty"], "--port"),
])
def test_out_of_range_options_are_refused(flags: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *flags, "-q"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err


def test_a_port_in_use_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err


def test_an_unknown_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "no-such-host.invalid", "-q"]) == 2
    assert "does not resolve" in capsys.readouterr().err
