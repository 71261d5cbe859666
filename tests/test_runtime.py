import dask.array as dsa
import pytest
from click.testing import CliRunner

from geoembed.cli import main
from geoembed.errors import GeoembedError
from geoembed.runtime import compute, dask_client, describe_scheduler


def test_threads_scheduler_has_no_client():
    with dask_client("threads") as client:
        assert client is None
        (total,) = compute(dsa.ones((10, 10), chunks=5).sum())
    assert total == 100


def test_local_cluster_uses_worker_processes():
    with dask_client("local", workers=2) as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2
        assert __import__("os").getpid() not in set(pids.values())
        (total,) = compute(dsa.ones((64, 64), chunks=16).sum(), progress=True)
    assert total == 64 * 64


def test_unknown_scheduler_is_a_clear_error():
    with pytest.raises(GeoembedError, match="unknown --scheduler"):
        with dask_client("carrier-pigeon"):
            pass


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(GeoembedError, match="cannot reach the Dask scheduler"):
        with dask_client("tcp://127.0.0.1:9", timeout="1s"):
            pass


def test_describe_scheduler_names_what_dask_client_connects_to():
    with dask_client("local", workers=1) as client:
        # "local" starts the cluster type it is described as ...
        assert type(client.cluster).__name__ in describe_scheduler("local")
        address = client.scheduler.address
        # ... and connecting to its address is described as that scheduler
        with dask_client(address) as other:
            assert other.scheduler.address == address
            assert address in describe_scheduler(address)
    with dask_client("threads") as none:
        assert none is None and "in-process" in describe_scheduler("threads")
    shown = describe_scheduler("tls://alice:s3cret@h:8786")
    assert "s3cret" not in shown and "h:8786" in shown  # credentials never shown


def test_cli_version_and_help():
    runner = CliRunner()
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and "geoembed" in res.output
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "--scheduler" in res.output
