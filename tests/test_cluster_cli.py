"""``geoembed cluster``: end to end with CliRunner (real AlphaEarth data and synthetic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rioxarray
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate
from sklearn.cluster import KMeans as SKKMeans

from geoembed.cli import main
from geoembed.export.cog import read_class_names
from geoembed.jobs.model_io import load_kmeans as load_model

# write_zarr stores string band names, which Zarr v3 flags as not yet specified
pytestmark = pytest.mark.filterwarnings("ignore:The data type")


@pytest.mark.shared_data
def test_cluster_wisconsin_writes_valid_cog(aef_tif, tmp_path, dask_cluster):
    out = tmp_path / "c.tif"
    dist = tmp_path / "d.tif"
    args = [
        "--scheduler",
        dask_cluster.scheduler_address,
        "-q",
        "cluster",
        str(aef_tif),
        "-k",
        "8",
        "--seed",
        "0",
        "--metric",
        "euclidean",
        "-o",
        str(out),
        "--distance",
        str(dist),
        "--save-model",
        str(tmp_path / "model"),
        "--names",
        "0=water,3=forest",
        "--json",
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    assert cog_validate(str(dist))[0]
    names = read_class_names(out)
    assert names[0] == "water" and names[3] == "forest" and names[1] == "cluster_1"
    cmap = rioxarray.open_rasterio(out).isel(band=0).values
    assert cmap.shape == (97, 97) and cmap.max() < 8
    assert sum(c["pixels"] for c in summary["clusters"]) == 97 * 97
    # inertia of the written map, recomputed from the data, is within 1 % of sklearn's best of 10
    from geoembed.io import open_embeddings

    x = open_embeddings(aef_tif).values.reshape(64, -1).T
    model = load_model(tmp_path / "model")
    assert model.cluster_names_ == {0: "water", 3: "forest"}
    centers = model.cluster_centers_.astype(np.float64)
    inertia = float(np.sum((x - centers[cmap.ravel()]) ** 2))
    ref = SKKMeans(8, n_init=10, random_state=0).fit(x)
    assert inertia <= ref.inertia_ * 1.01
    np.testing.assert_allclose(
        rioxarray.open_rasterio(dist).isel(band=0).values.ravel() ** 2,
        np.sum((x - centers[cmap.ravel()]) ** 2, axis=1),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.fixture
def small_zarr(tmp_path):
    from geoembed.export import write_zarr
    from geoembed.testing import make_field

    path = tmp_path / "field.zarr"
    write_zarr(make_field(37, 53, chunks=16), path)
    return path


def test_cluster_refuses_existing_output_before_work(small_zarr, tmp_path):
    out = tmp_path / "c.tif"
    out.write_bytes(b"keep me")
    args = ["--scheduler", "sync", "cluster", str(small_zarr), "-k", "3", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    # --overwrite replaces only what geoembed wrote: a foreign file is kept
    result = CliRunner().invoke(main, [*args, "--overwrite", "--mode", "sample"])
    assert result.exit_code == 2 and "Refusing to replace" in result.output
    assert out.read_bytes() == b"keep me"
    out.unlink()
    assert CliRunner().invoke(main, [*args, "--mode", "sample"]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "-k", "4", "--overwrite", "--mode", "sample"])
    assert result.exit_code == 0, result.output
    assert cog_validate(str(out))[0]
    assert len(read_class_names(out)) == 4


def test_cluster_bad_names_and_too_many_clusters(small_zarr, tmp_path):
    out = tmp_path / "c.tif"
    base = ["--scheduler", "sync", "cluster", str(small_zarr), "-o", str(out)]
    result = CliRunner().invoke(main, [*base, "-k", "3", "--names", "7=water"])
    assert result.exit_code == 2 and "outside 0..2" in result.output
    result = CliRunner().invoke(main, [*base, "-k", "3", "--names", "water"])
    assert result.exit_code == 2 and "ID=NAME" in result.output
    result = CliRunner().invoke(main, [*base, "-k", "5000"])
    assert result.exit_code == 2 and "n_clusters=5000" in result.output
    assert not out.exists()


def test_cluster_text_report(small_zarr, tmp_path):
    out = tmp_path / "c.tif"
    args = ["--scheduler", "threads", "cluster", str(small_zarr), "-k", "4", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # the CLI's default metric is the library's (geoembed.cluster.KMeans: euclidean)
    assert "4 clusters (euclidean, lloyd)" in result.output
    assert "km2" in result.output


def test_cluster_cli_defaults_are_the_library_defaults(small_zarr, tmp_path):
    import inspect

    from geoembed.cluster import KMeans
    from geoembed.jobs.cluster import ClusterParams

    out = tmp_path / "c.tif"
    args = ["--scheduler", "threads", "cluster", str(small_zarr), "-k", "4", "-o", str(out)]
    cli = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    init = inspect.signature(KMeans).parameters
    assert cli["metric"] == init["metric"].default == ClusterParams.metric
    assert cli["mode"] == init["mode"].default == ClusterParams.mode
    # the same map as the library's KMeans with its defaults and the same seed
    from geoembed.io import open_embeddings

    field = open_embeddings(small_zarr)
    lib = KMeans(4, random_state=0).fit(field).predict(field).values
    assert (rioxarray.open_rasterio(out).isel(band=0).values == lib).all()


def test_cluster_table_counts_the_written_map(small_zarr, tmp_path):
    """The per-cluster table (computed with the writes, not re-read) matches the COG."""
    out = tmp_path / "c.tif"
    args = ["--scheduler", "threads", "cluster", str(small_zarr), "-k", "5", "-o", str(out)]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    written = rioxarray.open_rasterio(out).isel(band=0).values
    counts = np.bincount(written[written != 255].ravel(), minlength=5)
    assert [c["pixels"] for c in summary["clusters"]] == counts.tolist()
    assert not [p for p in tmp_path.iterdir() if ".geoembed-tmp-" in p.name]
