"""Cluster names: ``"0=water,3=forest"`` parsed, and one name per cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoembed.errors import ModelError

__all__ = ["class_names", "parse_names"]


def parse_names(spec: str | Mapping[int, str] | None, n_clusters: int) -> dict[int, str]:
    """Parse ``"0=water,3=forest"`` (or a mapping) into ``{cluster id: name}``.

    Raises
    ------
    ModelError
        For malformed entries, ids outside ``0..n_clusters-1`` or repeated ids.
    """
    if spec is None or spec == "":
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not value.strip():
                raise ModelError(
                    f"cannot read cluster name {part!r}; write names as ID=NAME pairs separated "
                    "by commas, e.g. 0=water,3=forest."
                )
            items.append((key.strip(), value.strip()))
    out: dict[int, str] = {}
    for key, value in items:
        try:
            cid = int(key)
        except (TypeError, ValueError):
            raise ModelError(f"cluster id {key!r} is not an integer (in names {spec!r}).") from None
        if not 0 <= cid < n_clusters:
            raise ModelError(
                f"cluster id {cid} is outside 0..{n_clusters - 1} (the model has {n_clusters} "
                "clusters)."
            )
        if cid in out:
            raise ModelError(f"cluster id {cid} is named twice in {spec!r}.")
        out[cid] = str(value)
    return out


def class_names(n_clusters: int, names: Mapping[int, str] | None = None) -> list[str]:
    """One name per cluster: the given names, ``cluster_<id>`` for the others."""
    names = names or {}
    return [names.get(i, f"cluster_{i}") for i in range(n_clusters)]
