"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

__all__ = ["echo_json", "job_client", "json_option", "overwrite_option", "show_progress"]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout."
)
overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing outputs that geoembed wrote (never other files or folders, "
    "never an input).",
)


def echo_json(payload: dict[str, Any]) -> None:
    """Print a machine-readable summary on stdout."""
    click.echo(json.dumps(payload, indent=2, default=str))


def show_progress(ctx: click.Context, as_json: bool = False) -> bool:
    """Whether to draw progress bars (not with --quiet, not when stderr is not a TTY in --json)."""
    return not ctx.obj.get("quiet", False) and (sys.stderr.isatty() or not as_json)


@contextmanager
def job_client(ctx: click.Context) -> Iterator[Any]:
    """Context manager opening the Dask client chosen with the global options.

    On the way out, once the workers are gone, the temporaries of any output set that a
    failure or an interrupt discarded are swept again: a task that was still writing
    when the error reached the client cannot leave anything behind.
    """
    from geoembed.export.outputs import sweep_discarded
    from geoembed.runtime import dask_client

    try:
        with dask_client(
            ctx.obj.get("scheduler", "local"), workers=ctx.obj.get("workers")
        ) as client:
            yield client
    finally:
        sweep_discarded()
