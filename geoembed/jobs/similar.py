"""The similarity job behind ``geoembed similar``: a similarity map, a mask, the top pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from geoembed.errors import LabelError
from geoembed.jobs._outputs import compute_all, plan_outputs, write_points, write_report

__all__ = ["SimilarOutputs", "SimilarParams", "run_similar"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SimilarParams:
    """References and thresholds (see :mod:`geoembed.similar`).

    Attributes
    ----------
    like : path
        Reference points or polygons.
    unlike : path, optional
        Places that are not like the references; the mask threshold then reaches
        ``precision`` on held-out references (needs a mask and no fixed threshold).
    metric, reduce
        See :func:`geoembed.similar.similarity`.
    threshold : float, optional
        Fixed mask threshold.
    precision, quantile, seed
        See :func:`geoembed.similar.choose_threshold`.
    top : int, optional
        Find the ``top`` most similar pixels (needs a top table output).
    """

    like: PathLike
    unlike: PathLike | None = None
    metric: str = "cosine"
    reduce: str = "mean"
    threshold: float | None = None
    precision: float = 0.9
    quantile: float = 0.05
    top: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class SimilarOutputs:
    """Where the similarity job writes (None: not written)."""

    similarity: PathLike
    mask: PathLike | None = None
    top: PathLike | None = None
    report: PathLike | None = None


def run_similar(
    source: PathLike,
    out: SimilarOutputs,
    params: SimilarParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Map how similar every pixel is to reference places; write the outputs together.

    Parameters
    ----------
    resume : bool
        Finish a killed run of the same job: the COG chunks it had written are reused
        (:mod:`geoembed.export.resume`).

    Returns
    -------
    dict
        JSON-ready summary (also the report).

    Raises
    ------
    LabelError
        ``top`` without a top table (or the reverse); ``unlike`` without a mask, or with
        a fixed threshold.
    """
    if (params.top is None) != (out.top is None):
        raise LabelError("top= (a number of pixels) and a top table output go together.")
    if params.unlike is not None and (out.mask is None or params.threshold is not None):
        raise LabelError(
            "unlike= only chooses the mask threshold; drop it, or ask for a mask without a "
            "fixed threshold."
        )
    outputs = plan_outputs(
        {
            "similarity raster": out.similarity,
            "mask": out.mask,
            "top table": out.top,
            "report": out.report,
        },
        overwrite=overwrite,
        resume=resume,
        inputs=[source, params.like, params.unlike],
    )
    from geoembed import similar as sm
    from geoembed.export import write_cog
    from geoembed.io import open_embeddings

    field = open_embeddings(source)
    refs, groups = sm.reference_vectors(field, params.like)
    summary: dict[str, Any] = {
        "source": str(source),
        "references": {"path": str(params.like), "vectors": len(refs)},
    }
    sim = sm.similarity(field, refs, metric=params.metric, reduce=params.reduce, source=str(source))
    with outputs:
        tasks = [write_cog(sim, outputs.stage("similarity raster"), compute=False, resume=resume)]
        if "mask" in outputs:
            if params.threshold is not None:
                info: dict[str, Any] = {"threshold": params.threshold, "method": "fixed"}
            else:
                neg = (
                    sm.reference_vectors(field, params.unlike)[0]
                    if params.unlike is not None
                    else None
                )
                info = sm.choose_threshold(
                    refs,
                    negatives=neg,
                    groups=groups,
                    metric=params.metric,
                    reduce=params.reduce,
                    precision=params.precision,
                    quantile=params.quantile,
                    seed=params.seed,
                )
            summary["threshold"] = info
            m = sm.similarity_mask(sim, float(info["threshold"]))
            tasks.append(
                write_cog(
                    m,
                    outputs.stage("mask"),
                    class_names=m.attrs["class_names"],
                    compute=False,
                    resume=resume,
                )
            )
        if params.top is not None:
            tasks.append(sm.top_similar(sim, params.top))
        done = compute_all(*tasks, progress=progress, label="similarity")
        summary["outputs"] = {"similarity": str(outputs.target("similarity raster"))}
        if "mask" in outputs:
            summary["outputs"]["mask"] = str(outputs.target("mask"))
        if "top table" in outputs:
            frame = done[-1]
            write_points(outputs, "top table", frame, field.rio.crs)
            summary["outputs"]["top"] = str(outputs.target("top table"))
            summary["top"] = frame.head(10).to_dict(orient="records")
        if "report" in outputs:
            write_report(outputs, "report", summary)
            summary["outputs"]["report"] = str(outputs.target("report"))
        outputs.commit()
    return summary
