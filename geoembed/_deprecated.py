"""Names that moved: a module ``__getattr__`` that still serves them, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_attributes"]


def moved_attributes(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """Return a module ``__getattr__`` serving names that moved elsewhere.

    Parameters
    ----------
    module : str
        The old module (``__name__``).
    moved : mapping
        ``{old name: "new.module:new_name"}``; the new module is imported on first use.

    Returns
    -------
    callable
        To assign to the old module's ``__getattr__``: each access to a moved name
        warns (:class:`DeprecationWarning`, pointing at the caller) and returns the object
        from its new home.
    """

    def __getattr__(name: str) -> object:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, _, new_name = moved[name].partition(":")
        warnings.warn(
            f"{module}.{name} moved to {new_module}.{new_name}; the old name goes in the next "
            "release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
