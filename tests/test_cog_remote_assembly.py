"""The assembly of a COG for a bucket reads its parts in place: scratch holds the COG only.

``write_cog`` to ``gs://`` / ``s3://`` (emulators) with ``GEOEMBED_TMPDIR`` pointing at a
directory that is watched while the COG is built: no part is ever downloaded there, only
the VRT mosaics and the COG itself; everything is removed afterwards, and the object
equals the local write byte for byte. (The figures on rasters larger than a worker are in
``tests/test_cog_scale.py``, a slow test.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr

import geoembed.export.cog_assembly as assembly
from geoembed._cloud import filesystem
from geoembed.errors import OutputError
from geoembed.export.cog import write_cog


def _probabilities() -> xr.DataArray:
    rng = np.random.default_rng(3)
    n = 1536
    data = rng.random((3, n, n), dtype=np.float32).round(2)
    arr = xr.DataArray(
        dask.array.from_array(data, chunks=(3, 512, 512)),
        dims=("class", "y", "x"),
        coords={
            "class": ["a", "b", "c"],
            "y": 4_000_000.0 - 10.0 * np.arange(n),
            "x": 500_000.0 + 10.0 * np.arange(n),
        },
    )
    return arr.rio.write_crs(32615)


def test_parts_are_read_in_place_and_scratch_holds_only_the_cog(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("GEOEMBED_TMPDIR", str(scratch))
    seen: list[list[str]] = []
    build = assembly._build

    def watched(tmpdir: Path, built: Path, plan: Any, parts: str | None = None) -> None:
        build(tmpdir, built, plan, parts=parts)
        seen.append(sorted(p.name for p in scratch.rglob("*") if p.is_file()))

    monkeypatch.setattr(assembly, "_build", watched)
    da = _probabilities()
    url = f"{bucket}/probs.tif"
    with dask.config.set(scheduler="threads"):
        assert write_cog(da, url) == url
        local = write_cog(da, tmp_path / "probs.tif")
    assert len(seen) == 2  # the bucket's write, then the local one
    files = seen[0]
    assert not [f for f in files if f.startswith("part-")], files
    assert [f for f in files if not f.endswith(".vrt")] == ["probs.tif"], files
    assert "mosaic.vrt" in files
    assert list(scratch.rglob("*")) == []  # all removed
    fs = filesystem(url)
    fs.invalidate_cache()
    assert fs.cat(url) == Path(local).read_bytes()
    assert [k.rpartition("/")[2] for k in fs.ls(bucket, detail=False)] == ["probs.tif"]


def test_an_unusable_scratch_directory_is_one_clear_error(
    gcs_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GEOEMBED_TMPDIR", str(blocker / "sub"))
    with dask.config.set(scheduler="sync"), pytest.raises(OutputError, match="GEOEMBED_TMPDIR"):
        write_cog(_probabilities(), f"{gcs_bucket}/probs.tif")
    fs = filesystem(gcs_bucket)
    fs.invalidate_cache()
    assert fs.ls(gcs_bucket, detail=False) == []
