"""A small name -> builder registry with "did you mean" errors.

Used for models, datasets and recipes::

    MODELS = Registry("model")

    @MODELS.register("lenet5", description="LeNet-5 (LeCun et al. 1998)")
    def lenet5(**kw): ...

    MODELS.get("lenet")  # RegistryError: unknown model 'lenet'; did you mean 'lenet5'? ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cnnlab.errors import RegistryError, unknown_name

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item: its name, the object and free-form metadata."""

    name: str
    obj: T
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise :class:`RegistryError` with suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, description: str = "", **tags: Any
    ) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``.

        Raises:
            ValueError: if ``name`` is already registered (a programming error).
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, obj, doc, dict(tags))
            return obj

        return decorator

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name``.

        Raises:
            RegistryError: if ``name`` is unknown; the message suggests close names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (see :meth:`entry`)."""
        return self.entry(name).obj

    def unknown_message(self, name: str) -> str:
        return unknown_name(self.kind, name, self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
