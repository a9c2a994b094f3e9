"""Every ``cnnlab ...`` line in README.md parses with cnnlab's own parser and runs (issue 12).

The commands are read from README.md's fenced code blocks at test time: a trailing
``# comment`` is stripped and a trailing backslash continues the line. For each one:

- its argv must parse with :func:`cnnlab.cli.main.build_parser` (a verb or flag that does not
  exist fails here, with the README line quoted);
- it must be shell-literal: ``[--json]`` is man-page notation that a shell hands to cnnlab
  as an argument, so a README line that uses it does not work when pasted;
- it runs for real, in process through :func:`cnnlab.cli.main.main`, in README order, in
  one shared temporary working directory laid out like the repository root (``data/mnist``,
  ``data/qmnist`` and ``examples`` link to the repository's), with the per-verb overrides of
  :data:`TINY` appended so each run takes seconds. ``[optional]`` parts are included in that
  run, and both with and without them must parse. Marked ``slow``: its 189 runs took 6.5 minutes
  on the idle 2-core machine (``make test-all`` runs them; the rest of this
  file, under a second, always runs). Later commands
  use earlier ones' outputs (``runs/fast``), so run the whole file, not a ``-k`` subset.

A command that cannot run here is in :data:`PARSE_ONLY`, with the reason. A line that fails
today is in an ``XFAIL_*`` table with ``strict=True``: the moment it is fixed the test fails
as XPASS, and whoever fixed it removes the entry. Tables are keyed by the argv as written
(space-joined); a repeat of an earlier identical line is keyed with `` #2``, `` #3``. An
entry that no README line matches any more fails :func:`test_tables_name_readme_commands`.
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnlab.cli.main import UsageError, build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"

# Appended to a verb's argv for the real run (argparse: the last value of a flag wins), so
# that every README command finishes in seconds on 2 cores. Keys: the verb, or "verb action".
TINY: dict[str, list[str]] = {
    # 2,000 training images, one epoch; the report is written by `cnnlab report` instead
    "train": ["--limit", "2000", "--epochs", "1", "--no-report"],
    "evaluate": ["--no-report"],  # the report has its own README line
    "report": ["--bootstrap", "50"],
    "cv": ["--folds", "2", "--limit", "600", "--epochs", "1"],
    # one trial on 200 images (the space's own epochs, 10..30, still apply); one worker
    "tune": ["--trials", "1", "--limit", "200", "--workers", "1"],
    "compare": ["--limit", "300", "--max-train-baseline", "300", "--epochs", "1"],
    "finetune": ["--epochs", "1", "--no-report"],
    "quantize": ["--calibration", "64"],
    "prune": ["--finetune-epochs", "1"],
    "bench": ["--engines", "eager,ort-fp32", "--rounds", "1"],
    "retrain": ["--replay", "200", "--epochs", "1"],
    "fairness": ["--n-boot", "50"],  # 50 bootstrap draws instead of 1,000
    # --evaluate on 40 images (10 for the randomisation check, 40 in the t-SNE map)
    "explain": ["--images", "40", "--sanity-images", "10", "--tsne-images", "40",
                "--neighbours", "2"],
    # the zoo's small run on 100 images per family (a --results line ignores it)
    "zoo": ["--images", "100"],
    # 20 digits, two corruptions and shifts, one FGSM epsilon, 5 pages per non-digit set
    "robustness": ["--images", "20", "--corruptions", "fog,zigzag", "--shifts", "slant",
                   "--attacks", "fgsm", "--eps", "0,0.3", "--ood-images", "5",
                   "--shift-images", "20", "--reference", "none"],
}

# Models too big to train in seconds, and the tiny variant of the same family that stands in
# for them wherever a command names them (--model, --models); the other names stay as written.
TINY_MODELS = {"alexnet": "alexnet-tiny", "vgg11": "vgg-tiny", "vgg16": "vgg-tiny"}

# Placeholders the README uses for the reader's own files, and what stands in for them.
STAND_INS = {"digit.png": "examples/digits/digit7_paper.png"}

# Commands that only get the parse check.
PARSE_ONLY: dict[str, str] = {
    "serve": "blocks until killed (tests/serve runs the service on a real loopback server); "
             "the workdir fixture stands in for it and the README's curl requests",
    "serve --allow-reload-path": "blocks until killed, like `serve` (tests/serve/"
                                 "test_hardening.py covers path reloads)",
    "finetune alexnet --train-dir photos/ --strategy linear --out runs/ft-alexnet":
        "photos/ stands for the reader's own images, and alexnet's ImageNet weights would "
        "be downloaded",
    # federated: Ray's and Flower's own warnings are errors under this file's warning filter,
    # and rounds take minutes; tests/federated runs simulate (a subprocess, tiny MNIST) and
    # the server with two clients (slow)
    **dict.fromkeys([
        "federated simulate --clients 100 --partition iid --rounds 20 --fraction 0.1 "
        "--local-epochs 5 --out runs/fed-iid",
        "federated simulate --clients 100 --partition shards:2 --rounds 200 --strategy fedprox "
        "--out runs/fed-shards",
        "federated simulate --clients 10 --rounds 10 --fraction 0.5 --dp server "
        "--noise-multiplier 1.0 --clipping-norm 1.0 --out runs/fed-dp",
        "federated simulate --partition iid --model-arg kernel_size=5 --model-arg hidden=512 "
        "--lr 0.1 --val-fraction 0.01 --stop-at-target --out runs/fed-mcmahan",
        "evaluate runs/fed-iid",
        "federated server --clients 2 --rounds 3 --out runs/fed-server",
        "federated client --clients 2 --partition-id 0",
        "federated client --clients 2 --partition-id 1"],
        "Flower/Ray runs (see tests/federated)"),
}

_BRACKETS = "[optional] notation: a shell passes {} to cnnlab as an argument"
# README lines that are not shell-literal today (README fix: drop the brackets and say in the
# comment what the option adds).
XFAIL_LITERAL: dict[str, str] = {}
# README lines whose argv does not parse today.
XFAIL_PARSE: dict[str, str] = {}
# README lines that parse but do not run today (see the reason for the fix).
XFAIL_RUN: dict[str, str] = {}
# README lines that are meant to end with another exit status than 0.
EXIT_STATUS: dict[str, int] = {}


@dataclass(frozen=True)
class ReadmeCommand:
    """One ``cnnlab`` command line of README.md."""

    lineno: int  # of its first line
    text: str  # as written, continuations joined, comment stripped
    argv: tuple[str, ...]  # without the leading "cnnlab"
    repeat: int = 1  # 2 for the second README line with this argv, ...

    @property
    def argv_key(self) -> str:
        """The argv as written, space-joined: the key in the tables above."""
        return " ".join(self.argv)

    @property
    def key(self) -> str:
        """:attr:`argv_key`, with `` #N`` for the N-th repeat of an identical line."""
        return self.argv_key + (f" #{self.repeat}" if self.repeat > 1 else "")

    def lookup(self, table: dict[str, str]) -> str | None:
        return table.get(self.key, table.get(self.argv_key))

    @property
    def verb(self) -> str:
        nested = self.argv[0] in ("data", "feedback") and len(self.argv) > 1
        return " ".join(self.argv[:2]) if nested else self.argv[0]

    def variants(self) -> list[list[str]]:
        """The argv with each ``[...]`` group left out or kept, every combination.

        Raises:
            ValueError: an unbalanced or nested bracket.
        """
        parts: list[str | list[str]] = []  # plain tokens, and groups
        group: list[str] | None = None
        for token in self.argv:
            opens, closes = token.startswith("["), token.endswith("]")
            if opens and group is not None:
                raise ValueError(f"{self}: nested [ ]")
            if opens:
                group, token = [], token[1:]
            if closes:
                if group is None:
                    raise ValueError(f"{self}: ] without [")
                token = token[:-1]
            if group is None:
                parts.append(token)
            else:
                group += [token] if token else []
                if closes:
                    parts.append(group)
                    group = None
        if group is not None:
            raise ValueError(f"{self}: [ without ]")
        groups = [p for p in parts if isinstance(p, list)]
        out = []
        for keep in itertools.product((False, True), repeat=len(groups)):
            chosen = dict(zip(map(id, groups), keep, strict=True))
            argv: list[str] = []
            for p in parts:
                if isinstance(p, str):
                    argv.append(p)
                elif chosen[id(p)]:
                    argv += p
            out.append(argv)
        return out

    def __str__(self) -> str:
        return f"README.md:{self.lineno}: cnnlab {self.text}"


def readme_commands(markdown: str) -> list[ReadmeCommand]:
    """Every line starting with ``cnnlab `` in the fenced code blocks of ``markdown``."""
    commands = []
    in_block = False
    pending: tuple[int, str] | None = None  # a command continued by a trailing backslash
    for lineno, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, None
            continue
        if not in_block:
            continue
        if pending is None:
            if not line.lstrip().startswith("cnnlab "):
                continue
            pending = (lineno, "")
        start, text = pending
        text += " " + line.strip()
        if text.endswith("\\"):
            pending = (start, text[:-1])
            continue
        pending = None
        argv = tuple(shlex.split(text, comments=True)[1:])
        command = re.sub(r"\s+#.*$", "", " ".join(text.split()))
        repeat = 1 + sum(c.argv == argv for c in commands)
        commands.append(ReadmeCommand(start, command.removeprefix("cnnlab "), argv, repeat))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _params(xfail: dict[str, str], skip: dict[str, str] | None = None) -> list:
    """One pytest.param per README command, in README order, marked from the tables."""
    params = []
    for cmd in COMMANDS:
        marks = []
        if skip and (reason := cmd.lookup(skip)):
            marks.append(pytest.mark.skip(reason=reason))
        elif reason := cmd.lookup(xfail):
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(cmd, id=f"L{cmd.lineno}-{cmd.verb.replace(' ', '-')}",
                                   marks=marks))
    return params


def _parse(argv: list[str]) -> str | None:
    """None if ``argv`` parses with cnnlab's parser, else argparse's message."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return str(e)
    except SystemExit as e:  # --help, --version
        return None if e.code == 0 else f"exit status {e.code}"
    return None if args.verb else "no verb"


# ------------------------------------------------------------------------ the line list


def test_readme_commands_are_found():
    assert len(COMMANDS) >= 30, [str(c) for c in COMMANDS]
    assert readme_commands("```\ncnnlab a b \\\n  --c 1 \\\n  --d x   # note\n```\n"
                           "cnnlab outside\n```python\ncnnlab.load('x')\n```\n"
                           "```\ncnnlab a b --c 1 --d x\n```\n") == [
        ReadmeCommand(2, "a b --c 1 --d x", ("a", "b", "--c", "1", "--d", "x")),
        ReadmeCommand(11, "a b --c 1 --d x", ("a", "b", "--c", "1", "--d", "x"), repeat=2)]
    assert ReadmeCommand(1, "", ("runs", "[runs]", "[--sort", "k", "--reverse]")).variants() == [
        ["runs"], ["runs", "--sort", "k", "--reverse"], ["runs", "runs"],
        ["runs", "runs", "--sort", "k", "--reverse"]]


def test_tables_name_readme_commands():
    keys = {cmd.key for cmd in COMMANDS} | {cmd.argv_key for cmd in COMMANDS}
    tables = {"PARSE_ONLY": PARSE_ONLY, "XFAIL_LITERAL": XFAIL_LITERAL,
              "XFAIL_PARSE": XFAIL_PARSE, "XFAIL_RUN": XFAIL_RUN, "EXIT_STATUS": EXIT_STATUS}
    stale = {f"{name}: {key}" for name, table in tables.items() for key in table
             if key not in keys}
    assert not stale, "entries no README line matches any more (remove them): " + str(stale)
    verbs = {cmd.verb for cmd in COMMANDS}
    assert set(TINY) <= verbs, f"TINY names verbs no README line uses: {set(TINY) - verbs}"


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("cmd", _params(XFAIL_PARSE))
def test_readme_command_parses(cmd: ReadmeCommand):
    for argv in cmd.variants():
        error = _parse(argv)
        assert error is None, f"{cmd}\n  `cnnlab {shlex.join(argv)}`: {error}"


@pytest.mark.parametrize("cmd", _params(XFAIL_LITERAL))
def test_readme_command_is_shell_literal(cmd: ReadmeCommand):
    brackets = [t for t in cmd.argv if t.startswith("[") or t.endswith("]")]
    assert not brackets, f"{cmd}\n  a shell passes {brackets} to cnnlab as arguments"


# ------------------------------------------------------------------------ running for real


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory laid out like the repository root, shared by the commands in README
    order: data/mnist, data/qmnist and examples link to the repository's; data/ itself is a real
    directory,
    so `cnnlab data export ... --out data/sklearn-digits` writes here, not into the checkout.
    """
    if not (REPO_ROOT / "data" / "mnist").is_dir():
        pytest.skip("data/mnist is not in the repository")
    root = tmp_path_factory.mktemp("readme")
    (root / "data").mkdir()
    (root / "data" / "mnist").symlink_to(REPO_ROOT / "data" / "mnist")
    (root / "data" / "qmnist").symlink_to(REPO_ROOT / "data" / "qmnist")
    (root / "examples").symlink_to(REPO_ROOT / "examples")
    for name, source in STAND_INS.items():
        shutil.copy(REPO_ROOT / source, root / name)
    return root


# Verbs that read what `cnnlab serve` and its users leave behind: see served_feedback.
NEEDS_FEEDBACK = ("feedback stats", "feedback export", "retrain")


@pytest.fixture(scope="module")
def served_feedback(workdir: Path) -> Path:
    """What `cnnlab serve` (which cannot run here) and the README's curl requests leave in
    workdir: a feedback store at serve's default place, runs/serve/feedback.db. Each example
    digit is predicted twice through the service's app and its true label (the digit in the
    file name) given as feedback."""
    from fastapi.testclient import TestClient

    from cnnlab.serve.app import ServeSettings, create_app

    db = workdir / "runs" / "serve" / "feedback.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    app = create_app(ServeSettings(checkpoint="default", engine="torch",
                                   feedback_url=f"sqlite:///{db}"))
    with TestClient(app) as client:
        for path in sorted((workdir / "examples" / "digits").glob("digit*.png")) * 2:
            r = client.post("/v1/predict", files={"file": (path.name, path.read_bytes(),
                                                           "image/png")})
            assert r.status_code == 200, r.text
            fb = client.post("/v1/feedback", json={"prediction_id": r.json()["prediction_id"],
                                                   "label": path.name[len("digit")]})
            assert fb.status_code == 201, fb.text
    return db


def _tiny_argv(argv: list[str]) -> list[str]:
    """``argv`` with :data:`TINY_MODELS` substituted in the values of --model and --models."""
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        if token in ("--model", "--models"):
            out[i + 1] = ",".join(TINY_MODELS.get(m, m) for m in out[i + 1].split(","))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _params(XFAIL_RUN, skip=PARSE_ONLY))
# Models trained for seconds do not predict every class, which the metrics rightly warn about
# (pytest turns warnings into errors here; the command itself would print it and go on).
@pytest.mark.filterwarnings("ignore::cnnlab.evaluate.UndefinedMetricWarning")
def test_readme_command_runs(cmd: ReadmeCommand, workdir: Path, request, monkeypatch, capsys):
    if cmd.verb in NEEDS_FEEDBACK:
        request.getfixturevalue("served_feedback")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / ".cache"))  # not the user's cache
    argv = _tiny_argv([*cmd.variants()[-1], *TINY.get(cmd.verb, [])])  # with every [optional]
    status = main(argv)
    captured = capsys.readouterr()
    expected = EXIT_STATUS.get(cmd.key, EXIT_STATUS.get(cmd.argv_key, 0))
    assert status == expected, (
        f"{cmd}\n  ran as `cnnlab {shlex.join(argv)}` in {workdir}: exit status {status}, "
        f"expected {expected}\n  stderr: {captured.err.strip()[-2000:]}")
