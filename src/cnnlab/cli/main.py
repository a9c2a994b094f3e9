"""``cnnlab <verb> [options]``: argument parsing, logging and the error contract.

Exit status: 0 success, 1 runtime failure, 2 usage or input error (one ``error: ...`` line on
stderr, no traceback unless ``--debug``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import sys
from collections.abc import Sequence

from cnnlab._version import __version__
from cnnlab.cli._util import Parser, UsageError

__all__ = ["build_parser", "entry", "main"]

# one module per verb; each has add_parser(subparsers) and run(args) -> int
VERBS = ("data", "models", "summary", "train", "evaluate", "predict", "report", "compare", "cv",
         "tune", "finetune", "export", "quantize", "prune", "zoo",
         "bench", "serve", "feedback", "retrain", "runs", "federated", "explain", "fairness",
         "robustness")


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


# a value as library messages write it, a Python literal: 'qat', True, False, 3, 0.5
_LITERAL = r"'[^']*'|\"[^\"]*\"|True|False|-?\d+(?:\.\d+)?(?:e-?\d+)?"


def _verb_options(verb_parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The verb's options by dest. A verb with sub-verbs (``data``, ``feedback``) has theirs,
    where a dest is the same option in all of them."""
    options: dict[str, argparse.Action] = {}
    ambiguous: set[str] = set()
    parsers = [verb_parser]
    while parsers:
        # argparse has no public way to list a parser's options: _actions is what it keeps
        # them in
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.option_strings and action.dest != "help":
                known = options.setdefault(action.dest, action)
                if known.option_strings != action.option_strings:
                    ambiguous.add(action.dest)
    return {dest: a for dest, a in options.items() if dest not in ambiguous}


def _flag(action: argparse.Action) -> str:
    """The option's long name; ``--x`` of ``--x/--no-x``."""
    names = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
    return max([o for o in names if not o.startswith("--no-")] or names, key=len)


def _flag_with(action: argparse.Action, literal: str) -> str | None:
    """What to pass for the setting to have the value ``literal``: ``--method qat``,
    ``--overwrite``, ``--no-feature-cache``; None when no flag gives it (``overwrite=False``)."""
    value = ast.literal_eval(literal)
    if action.nargs == 0:
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(value, bool):
            negative = [o for o in action.option_strings if o.startswith("--no-")]
            return _flag(action) if value or not negative else negative[0]
        return _flag(action) if value == action.const else None
    return f"{_flag(action)} {value if isinstance(value, str) else literal}"


def in_flag_terms(message: str, verb_parser: argparse.ArgumentParser | None) -> str:
    """A library message, which names settings, in the flags of the verb that ran: the one
    place where settings become flags. For the settings the verb has a flag for:

    - ``The 'shots' setting of finetune must be ...`` becomes ``--shots must be ...``, and
      ``The 'shots' setting of finetune (9) needs ...`` becomes ``--shots 9 needs ...``;
    - ``set data_dir`` becomes ``pass --data-dir``;
    - a setting with a value, ``method='qat'``, ``overwrite=True``, ``feature_cache=False``,
      becomes ``--method qat``, ``--overwrite``, ``--no-feature-cache`` (``set ...``:
      ``pass ...``).

    Other text, config keys (``optim.lr``) included, is left as it is."""
    if verb_parser is None:
        return message
    options = _verb_options(verb_parser)
    if not options:
        return message
    names = "|".join(re.escape(d) for d in sorted(options, key=len, reverse=True))

    def setting(m: re.Match[str]) -> str:
        action = options[m.group(1)]
        if m.group(2) is None:
            return _flag(action)
        return _flag_with(action, m.group(2)) or f"{_flag(action)} ({m.group(2)})"

    def valued(m: re.Match[str]) -> str:
        flag = _flag_with(options[m.group(2)], m.group(3))
        return m.group(0) if flag is None else ("pass " if m.group(1) else "") + flag

    message = re.sub(rf"\b[Tt]he '({names})' setting of [\w-]+(?: \(({_LITERAL})\))?",
                     setting, message)
    message = re.sub(rf"(?<![\w.'\"-])(set )?({names})=({_LITERAL})(?!\w)", valued, message)
    return re.sub(rf"\bset ({names})(?![\w-]|\.\w)",
                  lambda m: f"pass {_flag(options[m.group(1)])}", message)


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
        args.argv = argv  # what a verb that relaunches itself (train --nproc) passes on
        return int(args.run(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from cnnlab._io import write_failure
        from cnnlab.errors import CnnlabError

        if debug:
            raise
        e = write_failure(e) or e  # a full disk (exit 1) or a read-only one, said plainly
        user_error = isinstance(e, CnnlabError | FileNotFoundError | PermissionError |
                                IsADirectoryError | NotADirectoryError)
        if user_error:
            print(f"error: {in_flag_terms(str(e), verb_parser)}", file=sys.stderr)
            return int(getattr(e, "exit_status", 2))
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


def _choose_threads(argv: Sequence[str]) -> None:
    """Start torch with as many threads as cores are free (:mod:`cnnlab._threads`), or with
    ``--threads N``; one log line when busy cores made it fewer. Must run before torch is
    imported: OpenMP reads ``OMP_NUM_THREADS`` once, when it loads.

    With one of two cores busy, torch's default of one thread per core trained at about half
    the speed of one thread (``benchmarks/bench_contention.py``).
    """
    from cnnlab._threads import apply_thread_policy

    if not argv or {"-h", "--help", "--version"} & set(argv):
        return  # nothing will compute
    note = apply_thread_policy(argv)
    if note:
        _setup_logging("-q" in argv or "--quiet" in argv)
        logging.getLogger("cnnlab").info("%s", note)


def entry() -> None:
    """Console-script entry point."""
    from cnnlab._io import quiet_disk_errors_in_threads

    _tune_malloc()
    _choose_threads(sys.argv[1:])
    quiet_disk_errors_in_threads()  # a full disk: one error line, not a writer thread's traceback
    sys.exit(main())


if __name__ == "__main__":  # torchrun -m cnnlab.cli.main train ... (each rank)
    entry()
