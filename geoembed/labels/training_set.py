"""The :class:`TrainingSet` container: a small, in-memory table of labelled vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TrainingSet"]


@dataclass
class TrainingSet:
    """Labelled embedding vectors, ready for a classifier or cross-validation.

    Attributes
    ----------
    X : numpy.ndarray
        ``(n, bands)`` float32 vectors.
    y : numpy.ndarray
        ``(n,)`` int64 class ids ``0..C-1``, assigned in sorted order of the original
        label values (or in class-table order, see :func:`geoembed.labels.load_class_table`).
    class_names : list of str
        Name of each class id.
    class_values : list
        The original label value (or class-table id) of each class id, e.g. Dynamic
        World codes ``0..8``.
    colors : list of str or None
        ``#rrggbb`` colour of each class id, when a class table gave them.
    groups : numpy.ndarray
        ``(n,)`` int64 group ids for spatial cross-validation: the source row (polygon or
        point) each sample came from, or a user-given group column.
    xy : numpy.ndarray or None
        ``(n, 2)`` float64 coordinates in the field's CRS (pixel centres for polygon
        pixels, the point itself for points), or None when unknown.
    ids : numpy.ndarray
        ``(n,)`` int64 source row ids (0-based row position in the labels / table).
    report : dict
        JSON-serialisable summary: per-reason rejected counts and row ids, class counts,
        notes (reprojection, duplicates ...).
    bands : list of str or None
        Band names of the columns of ``X`` (the field's bands).
    """

    X: np.ndarray
    y: np.ndarray
    class_names: list[str]
    class_values: list[Any]
    colors: list[str] | None
    groups: np.ndarray
    xy: np.ndarray | None
    ids: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)
    bands: list[str] | None = None

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if self.xy is not None:
            self.xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)
        n = self.X.shape[0]
        for name in ("y", "groups", "ids"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"TrainingSet.{name} must have shape ({n},)")
        if self.xy is not None and self.xy.shape[0] != n:
            raise ValueError(f"TrainingSet.xy must have shape ({n}, 2)")

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def class_counts(self) -> dict[str, int]:
        """Count the samples of each class, by class name."""
        counts = np.bincount(self.y, minlength=self.n_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def subset(self, index: np.ndarray) -> TrainingSet:
        """Rows ``index`` (an integer or boolean array) as a new TrainingSet."""
        index = np.asarray(index)
        return TrainingSet(
            X=self.X[index],
            y=self.y[index],
            class_names=list(self.class_names),
            class_values=list(self.class_values),
            colors=None if self.colors is None else list(self.colors),
            groups=self.groups[index],
            xy=None if self.xy is None else self.xy[index],
            ids=self.ids[index],
            report=dict(self.report),
            bands=None if self.bands is None else list(self.bands),
        )

    def to_frame(self) -> Any:
        """Return the training set as a :class:`pandas.DataFrame`.

        Columns: the bands, ``class_id``, ``class_name``, ``class_value``, ``group``,
        ``id`` and, when known, ``x`` and ``y``.
        """
        import pandas as pd

        bands = self.bands or [f"F{i:03d}" for i in range(self.X.shape[1])]
        df = pd.DataFrame(self.X, columns=bands)
        df["class_id"] = self.y
        df["class_name"] = np.asarray(self.class_names, dtype=object)[self.y]
        df["class_value"] = np.asarray(self.class_values, dtype=object)[self.y]
        df["group"] = self.groups
        df["id"] = self.ids
        if self.xy is not None:
            df["x"] = self.xy[:, 0]
            df["y"] = self.xy[:, 1]
        return df
