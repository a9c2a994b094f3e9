"""``cnnlab <verb> [options]``: argument parsing, logging and the error contract.

Exit status: 0 success, 1 runtime failure, 2 usage or input error (one ``error: ...`` line on
stderr, no traceback unless ``--debug``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from cnnlab._version import __version__
from cnnlab.cli._util import Parser, UsageError

__all__ = ["build_parser", "entry", "main"]

# one module per verb; each has add_parser(subparsers) and run(args) -> int
VERBS = ("data", "models", "summary", "train", "evaluate", "predict", "report", "compare", "cv",
         "tune", "finetune", "export", "quantize", "prune",
         "bench", "serve", "feedback", "retrain", "runs")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def build_parser() -> Parser:
    parser = Parser(
        prog="cnnlab",
        description="Train, evaluate and use CNN image classifiers, MNIST first.",
        epilog="Run `cnnlab VERB --help` for a verb's options. Quick start, in the repository: "
               "cnnlab train --recipe fast --data-dir data --out runs/fast",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="only print results and errors (no progress, no log lines)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    import importlib

    for verb in VERBS:
        module = importlib.import_module(f"cnnlab.cli.{verb}")
        module.add_parser(sub, common, HelpFormatter)
    parser.verbs = dict(sub.choices)  # type: ignore[attr-defined]  # for in_flag_terms
    return parser


def in_flag_terms(message: str, verb_parser: argparse.ArgumentParser | None) -> str:
    """A library message, which names settings, in the flags of the verb that ran: the one
    place where settings become flags. ``The 'shots' setting of finetune must be ...``
    becomes ``--shots must be ...`` and ``set data_dir`` becomes ``pass --data-dir``, for the
    settings the verb has a flag for; other text is left as it is."""
    if verb_parser is None:
        return message
    # argparse has no public way to list a parser's options: _actions is what it keeps them in
    flags = {a.dest: max(a.option_strings, key=len) for a in verb_parser._actions
             if a.option_strings and a.dest != "help"}
    if not flags:
        return message
    names = "|".join(re.escape(d) for d in sorted(flags, key=len, reverse=True))
    message = re.sub(rf"The '({names})' setting of [\w-]+ must be",
                     lambda m: f"{flags[m.group(1)]} must be", message)
    return re.sub(rf"\bset ({names})\b", lambda m: f"pass {flags[m.group(1)]}", message)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("cnnlab")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    verb_parser: argparse.ArgumentParser | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.verb:
            parser.print_help(sys.stderr)
            return 2
        verb_parser = parser.verbs.get(args.verb)  # type: ignore[attr-defined]
        _setup_logging(getattr(args, "quiet", False))
        return int(args.run(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from cnnlab.errors import CnnlabError

        if debug:
            raise
        user_error = isinstance(e, CnnlabError | FileNotFoundError | PermissionError |
                                IsADirectoryError | NotADirectoryError)
        if user_error:
            print(f"error: {in_flag_terms(str(e), verb_parser)}", file=sys.stderr)
            return 2
        print(f"error: internal error ({type(e).__name__}: {e}); rerun with --debug for the "
              "traceback and report it", file=sys.stderr)
        return 1


def _tune_malloc() -> None:
    """Keep glibc from returning large activation buffers to the OS after every batch.

    Measured on the 2-core reference machine (../shared/DESIGN.md): batch-1000 inference 2.3x
    faster with these thresholds. Harmless where glibc is absent.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    except (OSError, AttributeError):
        pass


def entry() -> None:
    """Console-script entry point."""
    _tune_malloc()
    sys.exit(main())
