"""No hangs, no tracebacks, no exposure: the CLI and runtime against hostile peers and input.

CLI behaviour is checked in real subprocesses (exit code, one line on stderr, no
traceback); schedulers are real: a LocalCluster with worker processes on 127.0.0.1, a
silent socket and an HTTP server started by fixtures.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import dask.array as dsa
import numpy as np
import pytest

from geoembed.errors import SchedulerError, SchedulerSpecError, StalledJobError
from geoembed.runtime import compute, dask_client
from geoembed.runtime.redact import redact_obj, redact_text, redact_url

CLI = [sys.executable, "-c", "from geoembed.cli import main; main()"]


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None):
    """Run ``geoembed ARGS`` in a subprocess; the timeout makes a hang a test failure."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def assert_one_line_error(proc, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one non-empty stderr line starting ``Error:``, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- hostile peers


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that accepts connections and never says anything."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (not a Dask scheduler)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("peer", ["silent_server", "http_server"])
def test_non_dask_peer_fails_within_deadline(peer, request):
    address = request.getfixturevalue(peer)
    start = time.monotonic()
    with pytest.raises(SchedulerError, match=r"127\.0\.0\.1"):
        with dask_client(address, timeout="2s"):
            pass
    # generous bound: the point is "finishes", not how fast
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("peer", ["silent_server", "http_server"])
def test_cli_non_dask_peer_is_one_line_exit_1(peer, request, aef_tif):
    address = request.getfixturevalue(peer)
    proc = run_cli("--connect-timeout", "2", "--scheduler", address, "info", str(aef_tif))
    assert_one_line_error(proc, 1, "Dask scheduler", address.removeprefix("tcp://"))


def test_unreachable_port_is_one_line(aef_tif):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    proc = run_cli(
        "--connect-timeout", "2", "--scheduler", f"tcp://127.0.0.1:{port}", "info", str(aef_tif)
    )
    assert_one_line_error(proc, 1, "cannot reach")


def test_real_scheduler_still_connects(dask_cluster):
    with dask_client(dask_cluster.scheduler_address, timeout="10s") as client:
        (total,) = compute(dsa.ones((8, 8), chunks=4).sum())
        assert len(client.scheduler_info()["workers"]) == 2
    assert total == 64


# ---------------------------------------------------------------- option checks


@pytest.mark.parametrize("n", ["0", "-1"])
def test_cli_rejects_worker_counts_below_one(n, aef_tif):
    proc = run_cli("--scheduler", "local", "--workers", n, "info", str(aef_tif))
    assert_one_line_error(proc, 2, f"{n} is not a worker count")


@pytest.mark.parametrize("n", [0, -1, True])
def test_library_rejects_worker_counts_below_one(n):
    with pytest.raises(SchedulerSpecError, match="--workers"):
        with dask_client("local", workers=n):
            pass


@pytest.mark.parametrize("value", ["foo:bar", "http://127.0.0.1:8786", "tcp://host", "kube"])
def test_cli_unknown_scheduler_is_exit_2(value, aef_tif):
    proc = run_cli("--scheduler", value, "info", str(aef_tif))
    assert_one_line_error(proc, 2, "unknown --scheduler")


def test_bad_kubernetes_specs_are_one_line_exit_2(tmp_path, aef_tif):
    pytest.importorskip("dask_kubernetes")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    other = tmp_path / "pod.yaml"
    other.write_text("kind: Pod\nspec: {}\n")
    cases = {
        tmp_path / "missing.yaml": "cannot read",
        bad: "invalid YAML at line",
        scalar: "expected a DaskCluster manifest",
        other: "expected DaskCluster",
    }
    for path, needle in cases.items():
        proc = run_cli("--scheduler", f"kubernetes:{path}", "info", str(aef_tif))
        assert_one_line_error(proc, 2, needle)


def test_kubernetes_without_kubeconfig_is_one_line_exit_1(tmp_path, aef_tif):
    pytest.importorskip("dask_kubernetes")
    env = {"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    env.update({k: "" for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")})
    proc = run_cli("--scheduler", "kubernetes", "info", str(aef_tif), env=env)
    assert_one_line_error(proc, 1, "Kubernetes", "kubectl")


# ---------------------------------------------------------------- local cluster


def _listening_ports(pid: int) -> dict[int, str]:
    import psutil

    conns = psutil.Process(pid).net_connections(kind="tcp")
    return {c.laddr.port: c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}


def test_local_dashboard_listens_on_loopback_only():
    with dask_client("local", workers=1) as client:
        port = client.cluster.scheduler.http_server.port
        listening = _listening_ports(os.getpid())
        assert port in listening
        assert listening[port] == "127.0.0.1"
        assert "127.0.0.1" in client.dashboard_link


def test_worker_dying_at_startup_is_a_clear_error(tmp_path):
    import dask

    preload = tmp_path / "die_on_start.py"
    preload.write_text("import os\nos._exit(3)\n")
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        with pytest.raises(SchedulerError, match="local Dask workers failed to start"):
            with dask_client("local", workers=1, timeout="30s"):
                pass


def _nap(block):
    time.sleep(30)  # far longer than the stall timeout; the worker is killed on close
    return block


def test_stalled_job_names_the_stuck_task():
    with dask_client("local", workers=1, stall_timeout=2) as client:
        arr = dsa.ones(2, chunks=2).map_blocks(_nap, name="nap-forever", meta=np.ones(0))
        with pytest.raises(StalledJobError, match=r"no task finished for 2 s.*nap-forever"):
            compute(arr)
        # the stuck future was cancelled, so the cluster is free again
        assert client.processing() is not None


def test_watchdog_does_not_fire_on_a_moving_job():
    with dask_client("local", workers=1, stall_timeout=5):
        (total,) = compute(dsa.ones((64, 64), chunks=8).sum(), progress=True)
    assert total == 64 * 64


# ---------------------------------------------------------------- TLS


def test_tls_scheduler_with_certificate_files(tmp_path):
    from distributed import LocalCluster, Security

    sec = Security.temporary()
    files = {}
    for name, pem in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    files["key"] = tmp_path / "key.pem"
    files["key"].write_text(sec.tls_client_key)
    with LocalCluster(
        n_workers=1,
        processes=True,
        protocol="tls://",
        host="127.0.0.1",
        security=sec,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with dask_client(
            address,
            timeout="20s",
            tls_ca=files["ca"],
            tls_cert=files["cert"],
            tls_key=files["key"],
        ):
            (total,) = compute(dsa.ones(10, chunks=5).sum())
        assert total == 10
        # plain TCP to a TLS scheduler: an error within the deadline, not a hang
        with pytest.raises(SchedulerError):
            with dask_client(address.replace("tls://", "tcp://"), timeout="2s"):
                pass
        # tls:// without certificates: said before any connection
        with pytest.raises(SchedulerSpecError, match="--tls-ca"):
            with dask_client(address, timeout="2s"):
                pass


# ---------------------------------------------------------------- redaction


def test_redact_url_masks_passwords_and_tokens():
    assert redact_url("https://user:secret@host/a.tif") == "https://user:***@host/a.tif"
    assert redact_url("s3://tok@bucket/x") == "s3://***@bucket/x"
    text = redact_text("read gs://b/x.tif?X-Goog-Signature=abc123&alt=media failed")
    assert "abc123" not in text and "alt=media" in text
    assert redact_text("no url here: a:b@c") == "no url here: a:b@c"
    nested = redact_obj({"source": ["https://u:pw@h/x"], "n": 3})
    assert nested == {"source": ["https://u:***@h/x"], "n": 3}


@pytest.mark.parametrize(
    "args",
    [
        ["--scheduler", "threads", "info", "https://user:s3cr3t@127.0.0.1:9/f.tif?token=t0k3n"],
        ["--scheduler", "tcp://user:s3cr3t@127.0.0.1:8786", "info", "AEF"],
        # the unreachable label URL is named in the error, redacted
        [
            "classify",
            "AEF",
            "--labels",
            "https://u:s3cr3t@h/l.gpkg",
            "--label-column",
            "c",
            "-o",
            "m.tif",
        ],
    ],
)
def test_cli_never_echoes_credentials(args, aef_tif):
    proc = run_cli(*(str(aef_tif) if a == "AEF" else a for a in args))
    assert proc.returncode == 2, proc.stderr
    assert "s3cr3t" not in proc.stderr + proc.stdout
    assert "t0k3n" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "***" in proc.stderr


def test_cli_worker_dying_at_startup_is_one_line(tmp_path, aef_tif):
    preload = tmp_path / "die_on_start.py"
    preload.write_text("import os\nos._exit(3)\n")
    env = {"DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{preload}']"}
    proc = run_cli("--scheduler", "local", "--workers", "1", "info", str(aef_tif), env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the local Dask workers failed to start"), proc.stderr


def test_json_summary_is_redacted():
    import click
    from click.testing import CliRunner

    from geoembed.cli._options import echo_json

    @click.command()
    def show() -> None:
        echo_json({"source": "https://u:pw@host/x.zarr", "outputs": {"map": "s3://k@b/m.tif"}})

    res = CliRunner().invoke(show)
    assert res.exit_code == 0
    assert "pw@" not in res.output and "k@b" not in res.output
    assert "https://u:***@host/x.zarr" in res.output


def test_log_records_are_redacted(caplog):
    import logging

    from geoembed.runtime.redact import RedactingFilter

    logger = logging.getLogger("geoembed.test_redaction")
    flt = RedactingFilter()
    caplog.handler.addFilter(flt)
    try:
        with caplog.at_level(logging.WARNING):
            logger.warning("opening %s", "https://u:pw@h/x")
    finally:
        caplog.handler.removeFilter(flt)
    assert "pw" not in caplog.text and "https://u:***@h/x" in caplog.text


# ---------------------------------------------------------------- SIGINT

NAP_DRIVER = textwrap.dedent(
    """
    import sys, time
    import click
    import dask.array as dsa
    import numpy as np
    from geoembed.cli import main
    from geoembed.cli._options import job_client
    from geoembed.runtime import compute


    def nap(block):
        time.sleep(120)
        return block


    @main.command("nap")
    @click.pass_context
    def nap_command(ctx):
        with job_client(ctx):
            print("running", flush=True)
            arr = dsa.ones(4, chunks=1).map_blocks(nap, meta=np.ones(0))
            compute(arr, progress=True)


    if __name__ == "__main__":
        main()
    """
)


def test_sigint_prints_one_line_and_exits_130(tmp_path):
    driver = tmp_path / "nap_driver.py"
    driver.write_text(NAP_DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(driver), "--scheduler", "local", "--workers", "1", "nap"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(1.5)  # let the task start on the worker
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "task/s" not in line]
    assert lines[-1] == "interrupted", err


# ---------------------------------------------------------------- silent surprises


@pytest.fixture(scope="module")
def dw_table(shared_data):
    import pandas as pd

    return pd.read_csv(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv")


def _classify(field, table, out, *extra, quiet=False):
    return run_cli(
        *(["-q"] if quiet else []),
        "--scheduler",
        "threads",
        "classify",
        str(field),
        "--training",
        str(table),
        "--label-column",
        "dw_label",
        "--cv",
        "none",
        "-o",
        str(out),
        *extra,
    )


def test_single_class_training_is_an_error_unless_allowed(tmp_path, aef_tif, dw_table):
    one = dw_table[dw_table["dw_label"] == dw_table["dw_label"].iloc[0]]
    table = tmp_path / "one_class.csv"
    one.to_csv(table, index=False)
    proc = _classify(aef_tif, table, tmp_path / "map.tif")
    assert_one_line_error(proc, 2, "1 class", "--allow-single-class")
    assert not (tmp_path / "map.tif").exists()
    ok = _classify(aef_tif, table, tmp_path / "map.tif", "--allow-single-class")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "map.tif").exists()


def test_dropped_rows_are_counted_on_stderr(tmp_path, aef_tif, dw_table):
    df = dw_table.copy()
    df.loc[df.index[:240], "A00"] = np.nan
    table = tmp_path / "with_nan.csv"
    df.to_csv(table, index=False)
    proc = _classify(aef_tif, table, tmp_path / "map.tif", quiet=True)
    assert proc.returncode == 0, proc.stderr
    # -q silences warnings; without it the count is on stderr, not only in --json
    assert "dropped" not in proc.stderr
    proc = _classify(aef_tif, table, tmp_path / "map2.tif")
    assert proc.returncode == 0, proc.stderr
    assert f"dropped 240 of {len(df)} rows (nan: 240)" in proc.stderr
    assert "Traceback" not in proc.stderr


def _nan_field(path, *, stats: bool) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=24,
        height=20,
        count=64,
        dtype="float32",
        crs="EPSG:32616",
        transform=from_origin(358410, 4906600, 10, 10),
        nodata=np.nan,
    ) as dst:
        dst.write(np.full((64, 20, 24), np.nan, dtype="float32"))
        dst.descriptions = tuple(f"A{i:02d}" for i in range(64))
        if stats:
            dst.update_tags(1, STATISTICS_VALID_PERCENT="0")


def test_all_nodata_field_is_an_error_from_metadata(tmp_path, dw_table):
    field = tmp_path / "empty.tif"
    _nan_field(field, stats=True)
    table = tmp_path / "t.csv"
    dw_table.to_csv(table, index=False)
    proc = _classify(field, table, tmp_path / "map.tif")
    assert_one_line_error(proc, 2, "entirely nodata")
    assert not (tmp_path / "map.tif").exists()


def test_all_nodata_field_without_metadata_warns(tmp_path, dw_table):
    field = tmp_path / "empty.tif"
    _nan_field(field, stats=False)
    table = tmp_path / "t.csv"
    dw_table.to_csv(table, index=False)
    proc = _classify(field, table, tmp_path / "map.tif", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "every pixel of the class map is nodata" in proc.stderr
    assert '"mapped_pixels": 0' in proc.stdout


@pytest.fixture
def onnx_model(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from geoembed.infer.models import conv_stack

    return conv_stack(tmp_path / "m.onnx", bands=64, depth=1, n_classes=3)


def test_unknown_provider_is_an_error_naming_the_valid_ones(tmp_path, aef_tif, onnx_model):
    out = tmp_path / "classes.tif"
    args = ["--scheduler", "threads", "infer", str(aef_tif), "--model", str(onnx_model)]
    proc = run_cli(*args, "--providers", "tpu", "-o", str(out))
    assert_one_line_error(proc, 2, "'tpu'", "CPUExecutionProvider")
    assert not out.exists()
    proc = run_cli(*args, "--providers", "cpu", "--tile", "64", "--overlap", "4", "-o", str(out))
    assert proc.returncode == 0, proc.stderr


def test_provider_lists_are_parsed_not_split_into_letters():
    pytest.importorskip("onnxruntime")
    from geoembed.errors import ModelError
    from geoembed.infer.session import resolve_providers

    assert resolve_providers("cpu") == ("CPUExecutionProvider",)
    assert resolve_providers(" CPU , cpu") == ("CPUExecutionProvider",)
    with pytest.raises(ModelError, match=r"\['tpu'\]"):
        resolve_providers("tpu")
    with pytest.raises(ModelError, match="no execution provider"):
        resolve_providers(" , ")


def test_tile_too_large_for_memory_is_exit_2(tmp_path, aef_tif, onnx_model):
    out = tmp_path / "classes.tif"
    proc = run_cli(
        "--scheduler",
        "threads",
        "infer",
        str(aef_tif),
        "--model",
        str(onnx_model),
        "--tile",
        "100000",
        "-o",
        str(out),
    )
    assert_one_line_error(proc, 2, "'--tile'", "GiB", "use --tile")
    assert "MemoryError" not in proc.stderr
    assert not out.exists()


def test_distributed_log_lines_are_redacted(dask_cluster):
    """distributed logs through its own non-propagating handler; it is filtered too."""
    code = textwrap.dedent(
        f"""
        import logging
        from geoembed.runtime import dask_client

        with dask_client({dask_cluster.scheduler_address!r}, timeout="10s"):
            logging.getLogger("distributed.client").warning("reading https://u:pw@h/x.zarr")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "https://u:***@h/x.zarr" in proc.stderr
    assert "pw@" not in proc.stderr
