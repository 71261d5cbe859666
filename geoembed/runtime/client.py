"""Create or connect to a Dask scheduler from one ``--scheduler`` string.

Every wait on a peer has a deadline: reaching an existing scheduler (TCP connect, the
comm handshake and an identity request) is bounded by ``timeout`` as a whole, so a port
that accepts connections but does not speak Dask (an HTTP server, a silent socket) is an
error after ``timeout`` seconds instead of a hang. Local workers that die while starting
and Kubernetes clusters that cannot be created are one-line errors too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geoembed.errors import GeoembedError, SchedulerError, SchedulerSpecError, require
from geoembed.runtime.redact import install_log_redaction, redact_url
from geoembed.runtime.versions import check_versions

__all__ = [
    "DEFAULT_STALL_TIMEOUT",
    "check_workers",
    "dask_client",
    "describe_scheduler",
    "load_cluster_spec",
    "make_security",
    "parse_address",
]

log = logging.getLogger(__name__)

#: seconds without a finished task before a job is declared stalled (``--stall-timeout``)
DEFAULT_STALL_TIMEOUT = 1800.0

_IN_PROCESS = ("threads", "sync", "synchronous")
_SCHEMES = ("tcp", "tls")
_FORMS = "local, threads, sync, tcp://HOST:PORT, tls://HOST:PORT or kubernetes[:spec.yaml]"
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d+)$")


def describe_scheduler(scheduler: str) -> str:
    """Human-readable description of a ``--scheduler`` value (credentials redacted)."""
    if scheduler in _IN_PROCESS:
        return f"in-process {scheduler} scheduler"
    if scheduler == "local":
        return "LocalCluster (worker processes on 127.0.0.1)"
    if scheduler.startswith("kubernetes"):
        return "Dask cluster on Kubernetes (dask-kubernetes operator)"
    return f"existing scheduler at {redact_url(scheduler)}"


def check_workers(workers: int | None) -> int | None:
    """Validate a worker count: ``None`` (the default) or an integer >= 1.

    Raises
    ------
    SchedulerSpecError
        For 0 or a negative number.
    """
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SchedulerSpecError(
            f"--workers must be a whole number >= 1 (got {workers!r}); leave it out for one "
            "worker per core."
        )
    return workers


def parse_address(scheduler: str) -> str:
    """Check a scheduler address and return it with an explicit scheme.

    Parameters
    ----------
    scheduler : str
        ``tcp://HOST:PORT``, ``tls://HOST:PORT`` or ``HOST:PORT`` (read as ``tcp://``).

    Returns
    -------
    str
        The address, e.g. ``"tcp://10.0.0.5:8786"``.

    Raises
    ------
    SchedulerSpecError
        When the value is not such an address (e.g. ``foo:bar``).
    """
    scheme, sep, location = scheduler.partition("://")
    if not sep:
        scheme, location = "tcp", scheduler
    match = _HOST_PORT.match(location)
    if scheme not in _SCHEMES or not match or not 0 < int(match.group("port")) < 65536:
        raise SchedulerSpecError(f"unknown --scheduler {redact_url(scheduler)!r}; use {_FORMS}.")
    return f"{scheme}://{location}"


def make_security(
    address: str | None = None,
    *,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Any:
    """Build the ``distributed.Security`` for a client, or ``None`` for plain TCP.

    Parameters
    ----------
    address : str, optional
        The scheduler address; ``tls://`` needs certificates.
    tls_ca, tls_cert, tls_key : path, optional
        CA certificate, client certificate and its key (PEM). Without them, the
        ``distributed.comm.tls.*`` Dask configuration (``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``
        ...) is used.

    Returns
    -------
    distributed.Security or None
    """
    given = {"--tls-ca": tls_ca, "--tls-cert": tls_cert, "--tls-key": tls_key}
    if not any(given.values()):
        if address is None or not address.startswith("tls://"):
            return None
        from distributed import Security

        security = Security()  # from the Dask configuration
        if not (
            getattr(security, "tls_ca_file", None) and getattr(security, "tls_client_cert", None)
        ):
            raise SchedulerSpecError(
                f"--scheduler {redact_url(address)} uses TLS but no certificates are set; give "
                "--tls-ca, --tls-cert and --tls-key (or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
                "__CLIENT__CERT and __CLIENT__KEY)."
            )
        return security
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise SchedulerSpecError(f"TLS needs --tls-ca, --tls-cert and --tls-key; add {missing}.")
    for name, value in given.items():
        if not Path(str(value)).is_file():
            raise SchedulerSpecError(f"{name} {value}: no such file.")
    if address is not None and not address.startswith("tls://"):
        raise SchedulerSpecError(
            f"--tls-* options need a tls:// scheduler address (got {redact_url(address)!r})."
        )
    from distributed import Security

    return Security(
        tls_ca_file=str(tls_ca),
        tls_client_cert=str(tls_cert),
        tls_client_key=str(tls_key),
        require_encryption=True,
    )


def load_cluster_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a DaskCluster manifest for ``--scheduler kubernetes:SPEC``.

    Raises
    ------
    SchedulerSpecError
        The file is missing, not YAML, or not a DaskCluster mapping.
    """
    import yaml

    where = f"--scheduler kubernetes:{path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SchedulerSpecError(
            f"{where}: cannot read the cluster spec ({exc.strerror or exc}); give the path "
            "of a DaskCluster manifest such as k8s/daskcluster.yaml."
        ) from exc
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SchedulerSpecError(f"{where}: invalid YAML{at} ({problem}).") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("spec"), dict):
        raise SchedulerSpecError(
            f"{where}: expected a DaskCluster manifest (a mapping with kind: DaskCluster and "
            f"a spec), got {type(spec).__name__}; see k8s/daskcluster.yaml."
        )
    if spec.get("kind", "DaskCluster") != "DaskCluster":
        raise SchedulerSpecError(f"{where}: kind is {spec['kind']!r}, expected DaskCluster.")
    return spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_url(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)


async def _identify(address: str, deadline: float, connection_args: dict[str, Any]) -> Any:
    """Connect, complete the comm handshake, and ask the peer who it is."""
    from distributed.comm import connect

    comm = await connect(address, timeout=deadline, deserialize=False, **connection_args)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _probe_scheduler(address: str, deadline: float, security: Any) -> None:
    """Fail within ``deadline`` seconds unless ``address`` is a Dask scheduler."""
    args = security.get_connection_args("client") if security is not None else {}
    shown = redact_url(address)
    try:
        reply = asyncio.run(asyncio.wait_for(_identify(address, deadline, args), deadline))
    except TimeoutError as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {shown}: no answer within {deadline:g} s "
            "(nothing listens there, or the port belongs to a service that is not Dask). "
            "Check the address, or use --scheduler local."
        ) from exc
    except (OSError, EOFError, ValueError, TypeError) as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {shown} ({_first_line(exc)}). Check the "
            "address, or use --scheduler local to start workers on this machine."
        ) from exc
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise SchedulerError(
            f"{shown} answered, but not as a Dask scheduler; check the address and port "
            "(the scheduler listens on 8786 by default)."
        )


def _bounded(call: Any, deadline: float, what: str) -> Any:
    """Run ``call()`` in a helper thread and give up after ``deadline`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="geoembed-connect", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise SchedulerError(f"{what} did not finish within {deadline:g} s.")
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started in this block inherit an ignored SIGINT.

    Ctrl-C then reaches only the command, which stops the workers itself, instead of
    every worker printing its own ``KeyboardInterrupt`` traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_cluster(
    workers: int | None, threads_per_worker: int, memory_limit: str | None, dashboard: str
) -> Any:
    from distributed import LocalCluster

    n = workers or max(1, os.cpu_count() or 1)
    try:
        with _workers_ignore_sigint():
            return LocalCluster(
                n_workers=n,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address=dashboard,
                memory_limit=memory_limit,
            )
    except (GeoembedError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SchedulerError(
            f"the local Dask workers failed to start ({_first_line(exc)}). Check memory and "
            "--workers, or run with --scheduler threads."
        ) from exc


def _kube_cluster(scheduler: str, workers: int | None) -> Any:
    spec_path = scheduler.partition(":")[2] or None
    custom = load_cluster_spec(spec_path) if spec_path else None
    kc = require(
        "dask_kubernetes.operator",
        extra="k8s",
        feature="--scheduler kubernetes",
        package="dask-kubernetes",
    )
    before = set(kc.KubeCluster._instances)
    try:
        if custom is not None:
            return kc.KubeCluster(custom_cluster_spec=custom)
        return kc.KubeCluster(name="geoembed", n_workers=workers or 2)
    except (GeoembedError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget_failed_clusters(kc.KubeCluster, before)
        raise SchedulerError(
            f"cannot create a Dask cluster on Kubernetes ({_first_line(exc)}). Check that "
            "kubectl works here (KUBECONFIG or ~/.kube/config, or an in-cluster service "
            "account) and that the dask-kubernetes operator is installed."
        ) from exc


def _forget_failed_clusters(kube_cluster: Any, before: set[Any]) -> None:
    """Close (best effort) and unregister half-created KubeClusters.

    dask-kubernetes reaps every registered cluster at exit; one that never came up would
    print a traceback there (e.g. without credentials), after our one-line error.
    """
    for cluster in set(kube_cluster._instances) - before:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)
        kube_cluster._instances.discard(cluster)


def _apply_thread_policy(client: Any, deadline: float) -> None:
    """One compute thread per task on every worker (see :mod:`geoembed.runtime.threads`)."""
    from geoembed.runtime.threads import register_thread_policy

    _bounded(
        lambda: register_thread_policy(client),
        deadline + 5,
        "registering geoembed's thread policy on the Dask workers",
    )


@contextlib.contextmanager
def dask_client(
    scheduler: str = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | None = "auto",
    quiet: bool = True,
    timeout: str | float = "20s",
    dashboard: str = "127.0.0.1:0",
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Iterator[Any]:
    """Open a Dask client for a job and close it (and any cluster it started) afterwards.

    Parameters
    ----------
    scheduler : str
        ``"local"`` starts a ``LocalCluster`` with worker processes on 127.0.0.1;
        ``"threads"`` or ``"sync"`` use Dask's in-process schedulers (no client);
        ``"tcp://host:8786"`` (or ``tls://``) connects to a running scheduler;
        ``"kubernetes"`` or ``"kubernetes:spec.yaml"`` creates a cluster with
        dask-kubernetes' ``KubeCluster`` from a DaskCluster spec (see ``k8s/``).
    workers : int, optional
        Number of workers to start (local and Kubernetes), >= 1. Default: one per core.
    threads_per_worker : int, default 1
        Threads per local worker process.
    memory_limit : str, optional
        Memory limit per local worker (``"auto"`` shares the machine's memory).
    quiet : bool, default True
        Silence distributed's INFO logging.
    timeout : str or float, default "20s"
        Deadline for reaching an existing scheduler: connect, handshake and identity
        request together.
    dashboard : str, default "127.0.0.1:0"
        Address of a LocalCluster's dashboard (a free port on the loopback interface).
        Give e.g. ``"0.0.0.0:8787"`` only on a trusted network: the dashboard has no
        authentication.
    stall_timeout : float, optional
        Seconds without a finished task after which :func:`geoembed.runtime.compute`
        stops the job with :class:`~geoembed.errors.StalledJobError`; ``None`` or 0
        disables the watchdog.
    tls_ca, tls_cert, tls_key : path, optional
        TLS material for a ``tls://`` scheduler (see :func:`make_security`).

    Yields
    ------
    distributed.Client or None
        ``None`` for the in-process schedulers.

    Raises
    ------
    SchedulerSpecError
        A value that cannot name a scheduler (checked before anything starts).
    SchedulerError
        A scheduler that cannot be reached or workers that cannot be started.
    """
    import dask
    from dask.utils import parse_timedelta

    check_workers(workers)
    deadline = float(parse_timedelta(timeout, default="seconds"))
    address = None
    if scheduler.startswith("kubernetes"):
        if scheduler != "kubernetes" and not scheduler.startswith("kubernetes:"):
            raise SchedulerSpecError(
                f"unknown --scheduler {redact_url(scheduler)!r}; use {_FORMS}."
            )
    elif scheduler not in (*_IN_PROCESS, "local"):
        address = parse_address(scheduler)
    security = make_security(address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    stall = {"geoembed.stall-timeout": float(stall_timeout or 0)}

    if scheduler in _IN_PROCESS:
        name = "threads" if scheduler == "threads" else "synchronous"
        with dask.config.set(scheduler=name):
            yield None
        return

    from distributed import Client

    install_log_redaction("distributed")
    if quiet:
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if address is None:
        if scheduler == "local":
            cluster = _local_cluster(workers, threads_per_worker, memory_limit, dashboard)
        else:
            cluster = _kube_cluster(scheduler, workers)
        try:
            if workers and scheduler != "local":
                cluster.scale(workers)
            with Client(cluster) as client, dask.config.set(stall):
                _apply_thread_policy(client, deadline)
                yield client
        finally:
            cluster.close()
        return

    _probe_scheduler(address, deadline, security)
    kwargs: dict[str, Any] = {"timeout": deadline}
    if security is not None:
        kwargs["security"] = security
    try:
        client = _bounded(
            lambda: Client(address, **kwargs),
            deadline + 5,
            f"connecting to the Dask scheduler at {redact_url(address)}",
        )
    except OSError as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {redact_url(address)} ({_first_line(exc)}). "
            "Check the address, or use --scheduler local."
        ) from exc
    try:
        _bounded(
            lambda: check_versions(client, redact_url(address)),
            deadline + 5,
            f"asking the scheduler and workers at {redact_url(address)} for their versions "
            "(a worker that does not answer is stalled or unreachable: restart it)",
        )
        _apply_thread_policy(client, deadline)
        with dask.config.set(stall):
            yield client
    finally:
        client.close()
