"""Small helpers shared by the verbs: the parser types, JSON output, tables, shape parsing."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from cnnlab._io import clean_json
from cnnlab.errors import ConfigError

__all__ = ["SEED", "Formatter", "Parser", "SubParsers", "UsageError", "clean_json", "float_in",
           "int_in", "parse_shape", "print_json", "table"]


class UsageError(Exception):
    """A command-line usage error found by argparse."""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so main() owns the output."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# What add_subparsers() returns and each verb's add_parser(sub, common, formatter) receives.
# argparse exposes no public name for the class, so this alias names the private one once; a
# string because _SubParsersAction is generic only in typeshed, not at runtime.
SubParsers: TypeAlias = "argparse._SubParsersAction[Parser]"
# The formatter_class every verb passes on to its subparsers (main's HelpFormatter).
Formatter: TypeAlias = type[argparse.HelpFormatter]


def int_in(low: int, high: int | None = None, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``; argparse says ``argument --x:
    must be an integer >= 1; got '-1'`` (``note`` explains a special value, "0 = all")."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    expected += f" ({note})" if note else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text[:40]!r}")
        return value

    parse.kind = "int"  # type: ignore[attr-defined]  # what the CLI's bad-input corpus reads
    return parse


def float_in(low: float, high: float = math.inf, *, open_low: bool = False,
             open_high: bool = False, allow_inf: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number (``allow_inf``: or inf) within the bounds."""
    if high == math.inf:
        bounds = f"{'>' if open_low else '>='} {low:g}"
    else:
        bounds = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    expected = f"{'a number' if allow_inf else 'a finite number'} {bounds}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (not math.isnan(value) and (allow_inf or math.isfinite(value))
              and (value > low if open_low else value >= low)
              and (value < high if open_high else value <= high))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text[:40]!r}")
        return value

    parse.kind = "float"  # type: ignore[attr-defined]
    return parse


# what every random generator (torch, numpy, Optuna's samplers) accepts
SEED = int_in(0, 2**32 - 1)


def print_json(obj: Any, *, indent: int | None = None) -> None:
    sys.stdout.write(json.dumps(clean_json(obj), indent=indent) + "\n")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x28x28"`` -> ``(1, 28, 28)``.

    Raises:
        ConfigError: not three positive integers separated by ``x``.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"--input must look like CxHxW, e.g. 1x28x28 or 3x224x224; got {text!r}")
    return dims[0], dims[1], dims[2]


def table(rows: list[list[str]], header: list[str], align: str = "") -> str:
    """A plain-text table; ``align`` has one 'l' or 'r' per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [str(c).ljust(w) if a == "l" else str(c).rjust(w)
                 for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in rows)])
