"""The ``geoembed`` command line: thin click commands over the library functions.

Subcommands live in their own modules and are imported only when invoked, so
``geoembed --help`` stays fast and a missing optional dependency affects one command.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any, NoReturn

import click

from geoembed._version import __version__
from geoembed.errors import GeoembedError

__all__ = ["main"]

#: command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "info": "geoembed.cli.info:info",
    "demo": "geoembed.cli.demo:demo",
    "verify": "geoembed.cli.verify:verify",
    "clean": "geoembed.cli.clean:clean",
    "classify": "geoembed.cli.classify:classify",
    "cluster": "geoembed.cli.cluster:cluster",
    "infer": "geoembed.cli.infer:infer",
    "train-cnn": "geoembed.cli.train:train_cnn",
    "export-ee": "geoembed.cli.export_ee:export_ee",
    "fetch-aef": "geoembed.cli.fetch_aef:fetch_aef",
    "similar": "geoembed.cli.similar:similar",
    "change": "geoembed.cli.change:change",
    "regress": "geoembed.cli.regress:regress",
    "quicklook": "geoembed.cli.quicklook:quicklook",
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

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI; a usage error (bad option value ...) is one line on stderr, exit 2."""
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn errors and Ctrl-C into one line on stderr and an exit code.

        Exit codes: 2 bad input, 1 failure at run time (or an unexpected error), 130
        interrupted. ``-vv`` shows the traceback of unexpected errors.
        """
        try:
            return super().invoke(ctx)
        except GeoembedError as exc:
            sub = ctx.invoked_subcommand
            command = self.get_command(ctx, sub) if sub else None
            # the subcommand's options, then the group's (--scheduler, --workers...)
            message = as_cli_flags(as_cli_flags(str(exc), command), self)
            _fail(message, exc.exit_code)
        except KeyboardInterrupt:
            _quiet_distributed()
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.exceptions.ClickException as exc:
            from geoembed.runtime.redact import redact_text

            # e.g. a URL in click's "Path ... does not exist"
            exc.message = redact_text(exc.message)  # type: ignore[misc]
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if (ctx.obj or {}).get("verbose", 0) >= 2:
                raise
            from geoembed._cloud import storage_failure

            failure = storage_failure(exc)
            if failure is not None:
                _fail(failure, 1)
            first = (str(exc).strip().splitlines() or [""])[0]
            detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            _fail(f"unexpected error ({detail}); run with -vv for the traceback.", 1)


def as_cli_flags(message: str, command: click.Command | None) -> str:
    """Spell the library's parameter names in an error (``label_column=``) as flags.

    Library errors name a parameter as ``name=`` (followed by a space, punctuation or
    the end), or a switch as ``name=True``; the CLI shows the option of ``command`` with
    that name instead (``--label-column``, ``--overwrite``). Library messages never quote
    flags themselves. Any other ``name=value`` is left alone.
    """
    if command is None:
        return message
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            flag = max(param.opts, key=len)
            pattern = rf"(?<![\w-]){re.escape(param.name)}=(?=[\s,.;:)]|$)"
            message = re.sub(pattern, flag, message)
            if (
                param.is_flag
                and not param.secondary_opts
                and not param.count
                and isinstance(param.type, click.types.BoolParamType)
            ):
                switch = rf"(?<![\w-]){re.escape(param.name)}=True\b"
                message = re.sub(switch, flag, message)
    return message


def _fail(message: str, code: int) -> NoReturn:
    from geoembed.runtime.redact import redact_text

    _quiet_distributed()
    one_line = " ".join(redact_text(message).split())
    click.echo(f"Error: {one_line}", err=True)
    sys.exit(code)


def _quiet_distributed() -> None:
    """Silence distributed's shutdown chatter once the command has failed or was stopped."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


class _LogFormatter(logging.Formatter):
    """``LEVEL logger: message``; exceptions as one line unless ``-vv`` asked for tracebacks."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def formatException(self, ei: Any) -> str:
        """Full traceback with -vv, else the exception's type and first line."""
        if self.tracebacks:
            return super().formatException(ei)
        exc = ei[1]
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"  ({type(exc).__name__}: {first}; -vv shows the traceback)"

    def formatStack(self, stack_info: str) -> str:
        """Stack dumps only with -vv."""
        return stack_info if self.tracebacks else ""


def _check_workers(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(
            f"{value} is not a worker count; give 1 or more, or leave --workers out for one "
            "worker per core.",
            ctx=ctx,
            param=param,
        )
    return value


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
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=_check_workers,
    help="Workers to start, 1 or more (default: one per core).",
)
@click.option(
    "--dashboard",
    default="127.0.0.1:0",
    show_default=True,
    help="Address of the local Dask dashboard. It has no authentication: bind another "
    "interface (e.g. 0.0.0.0:8787) only on a trusted network.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0),
    default=1800.0,
    show_default=True,
    help="Stop a job when no task finishes for this many seconds (0: never).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Seconds to reach an existing scheduler (connect, handshake, identity).",
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate (PEM) of a tls:// scheduler.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Client certificate (PEM) for a tls:// scheduler.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Private key (PEM) of --tls-cert.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or logging.")
@click.pass_context
def main(
    ctx: click.Context,
    scheduler: str,
    workers: int | None,
    dashboard: str,
    stall_timeout: float,
    connect_timeout: float,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """geoembed: classify, cluster and run CNNs over geospatial embedding fields on Dask."""
    from geoembed.runtime.redact import install_log_redaction

    level = logging.WARNING - 10 * verbose if not quiet else logging.ERROR
    if not verbose:  # worker processes inherit this: no worker chatter on stderr
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    root = logging.getLogger()
    if not root.handlers:  # like logging.basicConfig: keep handlers set up by a host
        handler = logging.StreamHandler()
        handler.setFormatter(_LogFormatter(tracebacks=verbose >= 2))
        root.addHandler(handler)
        root.setLevel(max(level, logging.DEBUG))
    logging.captureWarnings(True)
    if not verbose:  # the clients log each request they gave up on; the error says it once
        for name in ("gcsfs", "s3fs", "aiobotocore", "botocore"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    install_log_redaction()
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
        ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))
    ctx.ensure_object(dict)
    ctx.obj.update(
        scheduler=scheduler,
        workers=workers,
        quiet=quiet,
        verbose=verbose,
        dashboard=dashboard,
        stall_timeout=stall_timeout,
        connect_timeout=connect_timeout,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
