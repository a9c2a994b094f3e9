"""The exception tree of cnnlab, and the one language its messages speak.

Everything a user can cause raises a subclass of :class:`CnnlabError`; most are also
``ValueError`` (or ``FileNotFoundError``, ``KeyError``, ``RuntimeError``) so that callers who
do not know cnnlab can still catch them sensibly::

    CnnlabError
    +-- ConfigError (ValueError)          an invalid option, config file, --set or recipe
    |   +-- SettingError                  one setting out of range; ``key`` names it
    |   +-- RegistryError (KeyError)      an unknown model, dataset, recipe, ... name
    +-- DataError (ValueError)            data that cannot be read or has the wrong form
    |   +-- DatasetNotFoundError (FileNotFoundError)
    |   +-- ImageTooLargeError            more pixels than the limit (decompression bombs)
    +-- ShapeError (ValueError)           a tensor that does not fit a model or function
    +-- CheckpointError (ValueError)      a missing, corrupt or foreign checkpoint
    +-- DeviceError (RuntimeError)        a requested device that is absent
    +-- ExportError (RuntimeError)        an export or quantisation that cannot be made
    +-- DiskFullError (OSError)           a write that found no space left (exit status 1)

Messages say what and where, what was expected, what was found and how to fix it. Two
builders give the common cases one form: :func:`invalid_value` (scikit-learn's "The 'x'
setting must be ... Got ... instead.") and :func:`unknown_name` (with "did you mean").
Library messages name settings, never CLI flags: a config key (``optim.lr``), or a parameter
of a function or settings object (``The 'shots' setting of finetune``, ``set data_dir``,
``method='qat'``); the CLI says which of its flags sets them
(:func:`cnnlab.cli.main.in_flag_terms`). The CLI turns these errors into one ``error: ...``
line and exit status 2 (``exit_status`` where a class has another); the service into a 4xx.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CheckpointError",
    "CnnlabError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "DeviceError",
    "DiskFullError",
    "ExportError",
    "ImageTooLargeError",
    "RegistryError",
    "SettingError",
    "ShapeError",
    "close_names",
    "invalid_value",
    "unknown_name",
]


class CnnlabError(Exception):
    """Root of every error cnnlab raises on purpose."""


class ConfigError(CnnlabError, ValueError):
    """An invalid option, config file, ``--set`` override or recipe."""


class SettingError(ConfigError):
    """A setting with a value of the wrong type or out of range; ``key`` names it
    (``"optim.weight_decay"``), so the CLI can name the flag the user gave instead."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        super().__init__(invalid_value(key, value, expected))
        self.key, self.expected, self.value = key, expected, value


class RegistryError(ConfigError, KeyError):
    """An unknown name in a registry (model, dataset, recipe, ...)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(CnnlabError, ValueError):
    """Data that cannot be read or does not have the expected form."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are missing and could not be fetched."""


class ImageTooLargeError(DataError):
    """An image with more pixels than the limit allows (a decompression bomb, or a photo to
    scale down first)."""


class ShapeError(CnnlabError, ValueError):
    """A tensor whose shape does not fit a model or function."""


class CheckpointError(CnnlabError, ValueError):
    """A checkpoint file that is missing, corrupt or of another format."""


class DeviceError(CnnlabError, RuntimeError):
    """A requested device that is not available."""


class ExportError(CnnlabError, RuntimeError):
    """An exported or quantised model that cannot be made, or does not match the original."""


class DiskFullError(CnnlabError, OSError):
    """A file that could not be written for want of space on its device. A runtime failure,
    not a usage error: the CLI exits with status 1 (``exit_status``)."""

    exit_status = 1


# --- message builders ---------------------------------------------------------------------------

def invalid_value(name: str, value: object, expected: str, *, kind: str = "setting",
                  fix: str = "") -> str:
    """The message for a value out of range: ``The 'train.lr' setting must be a positive
    number. Got -1.0 instead.`` followed by ``fix`` when there is one.

    ``kind`` says what ``name`` is: ``setting`` (a config key), ``parameter of f``, ``option``.
    """
    return f"The {name!r} {kind} must be {expected}. Got {value!r} instead." + (
        f" {fix}" if fix else "")


def close_names(name: str, known: Iterable[str], n: int = 3, *, prefix: str = "") -> list[str]:
    """The known names closest to ``name`` (for "did you mean"), best first.

    Names are compared without ``prefix`` where they share it: ``optim.lrr`` and ``optim.lr``
    are as close as ``lrr`` and ``lr``, and ``optim.`` alone makes no name close.
    """
    if not prefix:
        return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)
    stems = {k.removeprefix(prefix): k for k in known}
    return [stems[c] for c in difflib.get_close_matches(name.removeprefix(prefix), list(stems),
                                                         n=n, cutoff=0.5)]


def unknown_name(kind: str, name: str, known: Iterable[str], *, show_known: bool = True,
                 prefix: str = "") -> str:
    """The message for an unknown name: ``unknown model 'lenet'; did you mean 'lenet5'?
    (known: alexnet, lenet5, ...)``. ``prefix``: as for :func:`close_names`."""
    names = sorted(known)
    close = close_names(name, names, prefix=prefix)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = f" (known: {', '.join(names) or 'none'})" if show_known else ""
    return f"unknown {kind} {name!r}{hint}{listed}"
