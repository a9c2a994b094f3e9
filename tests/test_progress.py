import io
import re

from cnnlab.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress(4, "epoch 1/2", "img", stream=stream, interval=0) as bar:
        for i in range(4):
            bar.update(1, postfix=f"loss {i}")
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 5  # one per update, one at the end
    assert lines[0].startswith("epoch 1/2  25% 1/4 img [")
    assert re.fullmatch(r"epoch 1/2 100% 4/4 img \[\d\d:\d\d<\d\d:\d\d, .*img/s, loss 3\]",
                        lines[-1])
    assert bar.count == 4


def test_plain_lines_at_most_every_interval_and_always_at_the_end():
    stream = io.StringIO()
    bar = Progress(1000, "read", "img", stream=stream)  # 10 s by default off a terminal
    for _ in range(1000):
        bar.update()
    bar.close(postfix="done")
    bar.close()  # a second close prints nothing
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("read   0% 1/1000 img")
    assert lines[1].startswith("read 100% 1000/1000 img") and lines[1].endswith(", done]")


def test_bar_with_rate_and_eta_on_a_terminal():
    stream = Terminal()
    with Progress(8, "epoch 1/1", "img", stream=stream, interval=0) as bar:
        for _ in range(8):
            bar.update(1, postfix="acc 0.5")
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert re.fullmatch(r"epoch 1/1: 100%\|#+\| 8/8 \[\d\d:\d\d<\d\d:\d\d, .*img/s, acc 0.5\]",
                        last)


def test_scaled_units_and_unknown_total():
    stream = io.StringIO()
    bar = Progress(4 * 2**20, "download a.gz", "B", stream=stream, interval=0,
                   scale=1 / 2**20, scale_unit="MiB")
    bar.update(2**20)
    bar.close()
    assert bar.count == 2**20  # counted in bytes, shown in MiB
    assert stream.getvalue().splitlines()[-1].startswith("download a.gz  25% 1.00/4.00 MiB [")
    stream = io.StringIO()
    with Progress(None, "", "trial", stream=stream, interval=0) as bar:
        bar.update(3)
    assert re.fullmatch(r"3 trial \[\d\d:\d\d, .*trial/s\]", stream.getvalue().splitlines()[-1])


def test_disabled_writes_nothing():
    for stream in (io.StringIO(), Terminal()):
        with Progress(5, "quiet", stream=stream, enabled=False, interval=0) as bar:
            bar.update(5, postfix="x")
        assert stream.getvalue() == ""
        assert bar.count == 5 and not bar.enabled
