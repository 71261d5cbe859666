"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["echo_json", "job_client", "json_option", "overwrite_option", "show_progress"]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout."
)
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def echo_json(payload: dict[str, Any]) -> None:
    """Print a machine-readable summary on stdout (credentials in URLs redacted)."""
    from geoembed.runtime.redact import redact_obj

    text = json.dumps(payload, indent=2, default=str)
    click.echo(json.dumps(redact_obj(json.loads(text)), indent=2))


def show_progress(ctx: click.Context, as_json: bool = False) -> bool:
    """Whether to draw progress bars (not with --quiet, not when stderr is not a TTY in --json)."""
    return not ctx.obj.get("quiet", False) and (sys.stderr.isatty() or not as_json)


def job_client(ctx: click.Context) -> Any:
    """Context manager opening the Dask client chosen with the global options."""
    from geoembed.runtime import dask_client

    obj = ctx.obj or {}
    tls = {k: obj.get(k) for k in ("tls_ca", "tls_cert", "tls_key")}
    return dask_client(
        obj.get("scheduler", "local"),
        workers=obj.get("workers"),
        dashboard=obj.get("dashboard", "127.0.0.1:0"),
        stall_timeout=obj.get("stall_timeout", 1800.0),
        timeout=obj.get("connect_timeout", 20.0),
        **tls,
    )
