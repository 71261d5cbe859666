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


def test_describe_scheduler():
    assert "LocalCluster" in describe_scheduler("local")
    assert "tcp://h:8786" in describe_scheduler("tcp://h:8786")


def test_cli_version_and_help():
    runner = CliRunner()
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and "geoembed" in res.output
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "--scheduler" in res.output
