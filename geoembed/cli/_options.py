"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

__all__ = [
    "check_tile_memory",
    "echo_json",
    "job_client",
    "json_option",
    "overwrite_option",
    "resume_option",
    "show_progress",
]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout."
)
overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing outputs that geoembed wrote (never other files or folders, "
    "never an input).",
)
resume_option = click.option(
    "--resume",
    is_flag=True,
    help="Finish the same command after it was killed: COG and Zarr chunks that the "
    "killed run had written are kept, only the missing ones are computed. Needs the same "
    "inputs and options; outputs still appear only when complete.",
)


def echo_json(payload: dict[str, Any]) -> None:
    """Print a machine-readable summary on stdout (credentials in URLs redacted)."""
    from geoembed.runtime.redact import redact_obj

    text = json.dumps(payload, indent=2, default=str)
    click.echo(json.dumps(redact_obj(json.loads(text)), indent=2))


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

    obj = ctx.obj or {}
    try:
        with dask_client(
            obj.get("scheduler", "local"),
            workers=obj.get("workers"),
            dashboard=obj.get("dashboard", "127.0.0.1:0"),
            stall_timeout=obj.get("stall_timeout", 1800.0),
            timeout=obj.get("connect_timeout", 20.0),
            tls_ca=obj.get("tls_ca"),
            tls_cert=obj.get("tls_cert"),
            tls_key=obj.get("tls_key"),
        ) as client:
            yield client
    finally:
        sweep_discarded()


def check_tile_memory(
    tile: int | None, overlap: int | None, bands: int, batch_size: int, *, factor: int = 4
) -> None:
    """Refuse a ``--tile`` whose batches cannot fit in this machine's memory.

    One batch holds ``batch_size`` float32 windows of ``(tile + 2 * overlap)`` pixels
    squared and ``bands`` channels; the model's outputs and working memory take about as
    much again several times (``factor``). A tile that cannot fit is an error before any
    task runs, instead of a multi-terabyte ``MemoryError`` on a worker.

    Raises
    ------
    click.BadParameter
        Naming the memory needed and the largest tile that fits.
    """
    if tile is None:
        return
    import psutil

    side = tile + 2 * (overlap or 0)
    need = factor * batch_size * bands * side * side * 4
    total = psutil.virtual_memory().total
    if need <= total:
        return
    largest = int((total / (factor * batch_size * bands * 4)) ** 0.5) - 2 * (overlap or 0)
    raise click.BadParameter(
        f"a batch of {batch_size} tiles of {tile} px (+{overlap or 0} overlap) x {bands} bands "
        f"needs about {need / 2**30:,.0f} GiB, more than this machine's "
        f"{total / 2**30:,.0f} GiB; use --tile {max(largest, 1)} or less (or a smaller "
        "--batch-size).",
        param_hint="'--tile'",
    )
