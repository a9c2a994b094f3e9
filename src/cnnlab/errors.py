"""The exception tree of cnnlab.

Everything a user can cause raises a subclass of :class:`CnnlabError`. Most are also
``ValueError`` (or ``FileNotFoundError``) so that callers who do not know cnnlab can still
catch them sensibly. Messages say what and where, what was expected, what was found and how
to fix it. The CLI turns these into one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CnnlabError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "DeviceError",
    "ExportError",
    "RegistryError",
    "ShapeError",
]


class CnnlabError(Exception):
    """Root of every error cnnlab raises on purpose."""


class ConfigError(CnnlabError, ValueError):
    """An invalid option, config file, ``--set`` override or recipe."""


class RegistryError(ConfigError, KeyError):
    """An unknown name in a registry (model, dataset, recipe, ...)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(CnnlabError, ValueError):
    """Data that cannot be read or does not have the expected form."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are missing and could not be fetched."""


class ShapeError(CnnlabError, ValueError):
    """A tensor whose shape does not fit a model or function."""


class CheckpointError(CnnlabError, ValueError):
    """A checkpoint file that is missing, corrupt or of another format."""


class DeviceError(CnnlabError, RuntimeError):
    """A requested device that is not available."""


class ExportError(CnnlabError, RuntimeError):
    """An exported or quantised model that cannot be made, or does not match the original."""
