"""Names that a later run can find again, so an interrupted write can be resumed.

Temporaries of an ordinary write carry their host, process id and a random suffix
(:func:`~geoembed.export.atomic.temp_sibling`): nobody else will ever reuse them. A write
asked to be *resumable* instead puts its work under a name derived only from the target
and what is written there, so that the same command run again (``--resume``) finds the
chunks the killed run had finished and computes only the others:

* a staged output of a command: ``.<name>.geoembed-tmp-resume-<tag>`` next to the target;
* the COG parts of a resumable :func:`~geoembed.export.write_cog`:
  ``.<name>.geoembed-tmp-resume-cog-<token>``, where the token hashes the Dask graph of
  the raster and every setting of the write (a changed input, model or geoembed version
  gives another token, so parts of another computation are never reused).

These names hold no owner, so they are never removed automatically by another run
(``geoembed verify DIR`` lists them); the resumed run removes them when it completes.
"""

from __future__ import annotations

import os
from pathlib import Path

from geoembed.export.atomic import TEMP_MARKER, is_remote

__all__ = ["RESUME_TAG", "listing", "resume_sibling", "shown_name"]

#: the tag of resumable temporaries (``.<name>.geoembed-tmp-resume-...``)
RESUME_TAG = "resume"


def resume_sibling(target: str | os.PathLike[str], tag: str) -> str:
    """Return the resumable temporary name for ``target`` (a path or a URL).

    Parameters
    ----------
    target : str or path-like
        The final output (local path or ``gs://`` / ``s3://`` URL).
    tag : str
        What the temporary holds (``out``: a staged output, ``cog-<token>``: COG parts).

    Returns
    -------
    str
        A sibling of ``target`` whose name depends only on ``target`` and ``tag``.
    """
    text = str(target).rstrip("/")
    parent, _, name = text.rpartition("/")
    if not is_remote(text):
        p = Path(text)
        parent, name = str(p.parent), p.name
    return f"{parent}/.{name}{TEMP_MARKER}{RESUME_TAG}-{tag}"


def listing(directory: str) -> set[str]:
    """Names of the files directly under ``directory`` (a path or URL); empty if absent."""
    if is_remote(directory):
        from geoembed._cloud import filesystem

        fs = filesystem(directory)
        fs.invalidate_cache()
        try:
            entries = fs.ls(directory, detail=False)
        except (FileNotFoundError, OSError):
            return set()
        return {str(e).rstrip("/").rpartition("/")[2] for e in entries}
    try:
        return {e.name for e in os.scandir(directory) if e.is_file()}
    except OSError:
        return set()


def shown_name(path: str | os.PathLike[str]) -> str:
    """Return the file name of an output as its user knows it (a stage: its target's)."""
    name = str(path).rstrip("/").rpartition("/")[2]
    if TEMP_MARKER in name:
        name = name.partition(TEMP_MARKER)[0].removeprefix(".")
    return name
