"""The change job behind ``geoembed change``: magnitude, mask and class transitions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from geoembed.errors import LabelError
from geoembed.jobs._outputs import compute_all, plan_outputs, write_report

__all__ = ["ChangeOutputs", "ChangeParams", "run_change"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ChangeParams:
    """Mask threshold and the labels for transitions (see :mod:`geoembed.change`).

    Attributes
    ----------
    threshold : float or "otsu"
        Mask threshold on 1 - cosine, or Otsu on a sample (never below 0.1).
    training : path, optional
        Sampled embedding table with labels, for from -> to transitions.
    labels : path, optional
        Labelled points/polygons, sampled from the first field, for transitions.
    label_column : str, optional
        Label column of ``training`` / ``labels`` (required with them).
    class_table : path or str, optional
        Class table naming the label values.
    k : int
        Neighbours of the kNN that classifies both years.
    """

    threshold: float | str = "otsu"
    training: PathLike | None = None
    labels: PathLike | None = None
    label_column: str | None = None
    class_table: Any = None
    k: int = 5


@dataclass(frozen=True)
class ChangeOutputs:
    """Where the change job writes (None: not written)."""

    magnitude: PathLike
    mask: PathLike | None = None
    transitions: PathLike | None = None
    report: PathLike | None = None


def _check(out: ChangeOutputs, params: ChangeParams) -> None:
    given = [n for n, v in (("training", params.training), ("labels", params.labels)) if v]
    if (out.transitions is not None) != bool(given) or len(given) > 1:
        raise LabelError(
            "a transitions output needs exactly one of training= or labels= (and the other "
            "way round)."
        )
    if given and not params.label_column:
        raise LabelError(f"{given[0]}= needs label_column=.")


def run_change(
    first: PathLike,
    second: PathLike,
    out: ChangeOutputs,
    params: ChangeParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Map the change between two years of embeddings (on one grid); write it together.

    Parameters
    ----------
    resume : bool
        Finish a killed run of the same job: the COG chunks it had written are reused
        (:mod:`geoembed.export.resume`).

    Returns
    -------
    dict
        JSON-ready summary (also the report).
    """
    _check(out, params)
    outputs = plan_outputs(
        {
            "change raster": out.magnitude,
            "mask": out.mask,
            "transitions": out.transitions,
            "report": out.report,
        },
        overwrite=overwrite,
        resume=resume,
        inputs=[first, second, params.training, params.labels, params.class_table],
    )
    import dask
    import numpy as np

    from geoembed import change as ch
    from geoembed.export import write_cog
    from geoembed.io import open_embeddings

    a = open_embeddings(first)
    b = open_embeddings(second)
    names = [str(first), str(second)]
    magnitude = ch.change_magnitude(a, b, names=names)
    summary: dict[str, Any] = {"first": str(first), "second": str(second)}
    model = None
    counts = None
    if params.training is not None or params.labels is not None:
        import geoembed.labels as gl
        from geoembed.classify import KNNClassifier

        assert params.label_column is not None  # checked with the other options above
        if params.training is not None:
            ts = gl.training_from_table(
                params.training, a, label_column=params.label_column, class_table=params.class_table
            )
        else:
            ts = gl.training_from_geometries(
                a, params.labels, label_column=params.label_column, class_table=params.class_table
            )
        model = KNNClassifier.from_training(ts, params.k)
        counts = ch.transitions(model, a, b, names=names)[0]
    with outputs:
        tasks = [write_cog(magnitude, outputs.stage("change raster"), compute=False, resume=resume)]
        if counts is not None:
            # a Delayed like the writes: dask.compute does not keep the order of mixed
            # Array / Delayed arguments (seen with dask 2026.8)
            tasks.append(dask.delayed(np.asarray, pure=True)(counts.data))
            counts_at = len(tasks) - 1
        if "mask" in outputs:
            info = ch.choose_change_threshold(magnitude, params.threshold)
            summary["threshold"] = info
            m = ch.change_mask(magnitude, info["threshold"])
            tasks.append(
                write_cog(
                    m,
                    outputs.stage("mask"),
                    class_names=m.attrs["class_names"],
                    compute=False,
                    resume=resume,
                )
            )
        done = compute_all(*tasks, progress=progress, label="change")
        summary["outputs"] = {"change": str(outputs.target("change raster"))}
        if "mask" in outputs:
            summary["outputs"]["mask"] = str(outputs.target("mask"))
        if model is not None:
            tr = ch.transition_report(
                done[counts_at], model.class_names, pixel_area_ha=ch.pixel_area_hectares(a)
            )
            write_report(outputs, "transitions", tr)
            summary["outputs"]["transitions"] = str(outputs.target("transitions"))
            summary["changed_hectares"] = tr.get("changed_hectares")
            summary["top_changes"] = tr["changes"][:10]
        if "report" in outputs:
            write_report(outputs, "report", summary)
            summary["outputs"]["report"] = str(outputs.target("report"))
        outputs.commit()
    return summary
