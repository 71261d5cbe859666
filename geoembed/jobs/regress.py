"""The regression job behind ``geoembed regress``: kNN regression maps and a CV report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from geoembed.errors import LabelError
from geoembed.jobs._outputs import compute_all, plan_outputs, write_report

__all__ = ["RegressOutputs", "RegressParams", "run_regress"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RegressParams:
    """Targets and kNN settings (see :class:`geoembed.regress.KNNRegressor`).

    Exactly one of ``labels`` and ``training`` is given.

    Attributes
    ----------
    target_column : str
        Numeric column to predict.
    labels : path, optional
        Points or polygons with the target column; the field is sampled under them.
    training : path, optional
        Table of already-sampled embeddings with the target column.
    k, metric, weights
        kNN settings.
    cv : str, optional
        Cross-validation spec for the report (default: spatial); ``"none"`` skips it.
    seed : int
        Seed of the cross-validation folds.
    """

    target_column: str
    labels: PathLike | None = None
    training: PathLike | None = None
    k: int = 5
    metric: str = "cosine"
    weights: str = "uniform"
    cv: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class RegressOutputs:
    """Where the regression job writes (None: not written)."""

    prediction: PathLike
    spread: PathLike | None = None
    report: PathLike | None = None


def run_regress(
    source: PathLike,
    out: RegressOutputs,
    params: RegressParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict a continuous target for every pixel; write the maps and report together.

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
    if (params.labels is None) == (params.training is None):
        raise LabelError("give exactly one of labels= or training=.")
    outputs = plan_outputs(
        {"prediction raster": out.prediction, "spread raster": out.spread, "report": out.report},
        overwrite=overwrite,
        resume=resume,
        inputs=[source, params.labels, params.training],
    )
    from geoembed import regress as rg
    from geoembed.export import write_cog
    from geoembed.io import open_embeddings
    from geoembed.jobs.classify import default_cv

    field = open_embeddings(source)
    if params.labels is not None:
        targets = rg.targets_from_geometries(
            field, params.labels, target_column=params.target_column
        )
    else:
        targets = rg.targets_from_table(params.training, field, target_column=params.target_column)
    k, metric, weights = params.k, params.metric, params.weights
    model = rg.KNNRegressor.from_targets(targets, k, metric=metric, weights=weights)
    summary: dict[str, Any] = {
        "source": str(source),
        "training": {"n_samples": len(targets), "report": targets.report},
        "model": {"type": "KNNRegressor", **model.params()},
    }
    if params.cv != "none" and (out.report is not None or params.cv is not None):
        spec = params.cv or default_cv(targets)
        summary["cross_validation"] = rg.cross_validate_regression(
            lambda: rg.KNNRegressor(min(k, len(targets) - 1), metric=metric, weights=weights),
            targets,
            cv=spec,
            seed=params.seed,
        )
    ds = rg.predict_regression(model, field, source=str(source))
    with outputs:
        writes = [
            write_cog(ds["value"], outputs.stage("prediction raster"), compute=False, resume=resume)
        ]
        if "spread raster" in outputs:
            writes.append(
                write_cog(
                    ds["spread"], outputs.stage("spread raster"), compute=False, resume=resume
                )
            )
        compute_all(*writes, progress=progress, label="regressing")
        summary["outputs"] = {"prediction": str(outputs.target("prediction raster"))}
        if "spread raster" in outputs:
            summary["outputs"]["spread"] = str(outputs.target("spread raster"))
        if "report" in outputs:
            write_report(outputs, "report", summary)
            summary["outputs"]["report"] = str(outputs.target("report"))
        outputs.commit()
    return summary
