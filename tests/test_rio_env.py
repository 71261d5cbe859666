"""Local reads and writes build no cloud credential session (``geoembed._rio_env``)."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest
from _aws_sessions import count_aws_sessions
from _rasters import utm_raster

from geoembed.export import write_cog


def test_cog_write_sessions_do_not_grow_with_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AWS keys in the shell, every plain ``rasterio.Env`` builds a boto3 session.

    A local COG write opened one per chunk part (6 ms each, 3x slower writes); now the
    count is the same for 4 chunks and for 64.
    """
    made = count_aws_sessions(monkeypatch)

    def sessions(n: int) -> int:
        made.clear()
        with dask.config.set(scheduler="sync"):
            write_cog(utm_raster(n, seed=3), tmp_path / f"out-{n}.tif", blocksize=128)
        return len(made)

    few, many = sessions(256), sessions(1024)  # 4 and 64 chunks
    assert many == few, (few, many)
    assert few <= 4
