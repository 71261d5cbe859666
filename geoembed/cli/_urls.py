"""Click parameter types for paths that may also be object-store URLs.

``click.Path`` checks that an input exists on the local disk, and ``pathlib.Path`` turns
``gs://bucket/map.tif`` into ``gs:/bucket/map.tif``. These types keep a URL as the string
it was (checked later, before any task runs, by the job) and give local paths the usual
``click.Path`` checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoembed._cloud import is_url

__all__ = ["ClassTablePath", "InputPath", "OutputPath"]


class InputPath(click.ParamType):
    """An existing local file or directory, or a ``gs://`` / ``s3://`` / ``https://`` URL."""

    name = "path_or_url"

    def __init__(self, *, file_okay: bool = True, dir_okay: bool = True) -> None:
        self._local = click.Path(
            exists=True, file_okay=file_okay, dir_okay=dir_okay, path_type=Path
        )

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return a URL unchanged, or the checked local path."""
        if isinstance(value, str) and is_url(value):
            return value
        return self._local.convert(value, param, ctx)


class OutputPath(click.ParamType):
    """A local output path, or a ``gs://`` / ``s3://`` URL (kept verbatim)."""

    name = "path_or_url"

    def __init__(self, *, file_okay: bool = True, dir_okay: bool = False) -> None:
        self._local = click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return a URL unchanged, or the local path."""
        if isinstance(value, str) and is_url(value):
            return value
        return self._local.convert(value, param, ctx)


class ClassTablePath(InputPath):
    """A built-in class table name (``dynamic_world``...), or a class table file or URL."""

    name = "table"

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return a built-in name as it is, else the checked file path (or URL)."""
        from geoembed.labels.classes import builtin_class_tables

        if isinstance(value, str) and value.lower() in builtin_class_tables():
            return value.lower()
        if isinstance(value, str) and not is_url(value) and not Path(value).exists():
            names = ", ".join(builtin_class_tables())
            self.fail(
                f"{value!r} is neither a class table file nor a built-in table ({names}).",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)
