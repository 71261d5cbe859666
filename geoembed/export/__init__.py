"""Validated, atomic writers for geoembed outputs: Cloud-Optimized GeoTIFF and Zarr.

* :func:`write_cog` writes class maps (colour table, class names, MODE overviews) and
  continuous rasters (confidence, probabilities; AVERAGE overviews) as COGs.
* :func:`write_zarr` writes any output DataArray/Dataset as Zarr, checks that every chunk
  is present and can resume an interrupted write.
* :func:`verify` reports whether a finished output is complete and valid.

Every writer checks its inputs and the output path before any Dask task runs, builds the
output under a temporary name next to the target, validates it, then renames it. The
commands go one step further with :class:`geoembed.export.outputs.OutputSet`: all their
outputs appear together or not at all, only outputs geoembed wrote are ever replaced, and
temporaries are removed on every exit path (see :mod:`geoembed.export.outputs`).
"""

from geoembed.export.cog import read_class_names, write_cog
from geoembed.export.verify import verify
from geoembed.export.zarr import missing_chunks, write_zarr

__all__ = ["missing_chunks", "read_class_names", "verify", "write_cog", "write_zarr"]
