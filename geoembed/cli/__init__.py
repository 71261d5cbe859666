"""The ``geoembed`` command line: thin click commands over the library functions.

Subcommands live in their own modules and are imported only when invoked, so
``geoembed --help`` stays fast and a missing optional dependency affects one command.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import click

from geoembed._version import __version__
from geoembed.errors import GeoembedError

__all__ = ["main"]

#: command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "info": "geoembed.cli.info:info",
    "demo": "geoembed.cli.demo:demo",
    "verify": "geoembed.cli.verify:verify",
    "classify": "geoembed.cli.classify:classify",
    "cluster": "geoembed.cli.cluster:cluster",
    "infer": "geoembed.cli.infer:infer",
    "train-cnn": "geoembed.cli.train:train_cnn",
    "export-ee": "geoembed.cli.export_ee:export_ee",
    "similar": "geoembed.cli.similar:similar",
    "change": "geoembed.cli.change:change",
    "regress": "geoembed.cli.regress:regress",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        for name, target in COMMANDS.items():
            module = target.partition(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            if importlib.util.find_spec(module) is None:
                return None
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GeoembedError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave through the normal exit path, so that temporaries are removed.

    Raises ``SystemExit(128 + signum)`` in the main thread; every ``finally`` and
    ``except BaseException`` cleanup (output sets, the Dask cluster) runs on the way
    out. A second SIGTERM during that cleanup is ignored (SIGKILL still works).
    """
    signal.signal(signum, signal.SIG_IGN)
    click.echo("geoembed: terminated; removing temporary files", err=True)
    raise SystemExit(128 + signum)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoembed")
@click.option(
    "--scheduler",
    default="local",
    envvar="GEOEMBED_SCHEDULER",
    show_default=True,
    help="local (LocalCluster with worker processes), threads, sync, tcp://HOST:PORT, "
    "or kubernetes[:spec.yaml].",
)
@click.option("--workers", type=int, default=None, help="Workers to start (default: one per core).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or logging.")
@click.pass_context
def main(
    ctx: click.Context, scheduler: str, workers: int | None, verbose: int, quiet: bool
) -> None:
    """geoembed: classify, cluster and run CNNs over geospatial embedding fields on Dask."""
    level = logging.WARNING - 10 * verbose if not quiet else logging.ERROR
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
        ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))
    ctx.ensure_object(dict)
    ctx.obj.update(scheduler=scheduler, workers=workers, quiet=quiet, verbose=verbose)
