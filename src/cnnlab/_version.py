"""The package version, in one place (``cnnlab.__version__`` and checkpoints read it)."""

__version__ = "0.1.0"
