"""The whole geoembed job on a built-in synthetic scene (no network, no data files).

:func:`run_demo` generates a synthetic AlphaEarth-like scene (NOT real data), writes the
field as Zarr and its ground truth as a COG, classifies the field with kNN from labelled
points sampled on the scene, clusters it with KMeans, writes both maps as COGs, scores
them against the ground truth (overall accuracy and kappa for kNN, the adjusted Rand index
for KMeans) and draws the panel quicklook (field, truth, kNN map, KMeans map, with
legends and a scale bar). Everything runs on whatever Dask scheduler is active.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from geoembed.export.outputs import OutputSet
from geoembed.jobs._outputs import marked, plan_outputs

__all__ = ["run_demo"]

log = logging.getLogger(__name__)

#: smallest demo scene (pixels per side)
_MIN_SIZE = 32


def _step(summary: dict[str, Any], name: str, t0: float) -> float:
    now = time.perf_counter()
    summary["seconds"][name] = round(now - t0, 2)
    log.info("demo: %s done in %.1f s", name, now - t0)
    return now


def _check_options(*, size: int, chunks: int, k: int, points_per_class: int) -> None:
    """Reject bad settings before anything is written."""
    from geoembed.errors import LabelError, SchemaError

    if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SIZE:
        raise SchemaError(f"size={size!r}: the demo scene needs at least {_MIN_SIZE} pixels.")
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise SchemaError(f"chunks={chunks!r}: the chunk size must be a positive integer.")
    if isinstance(points_per_class, bool) or not isinstance(points_per_class, int):
        raise LabelError(f"points_per_class={points_per_class!r} must be an integer.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= points_per_class:
        raise LabelError(
            f"k={k!r}: the number of neighbours must be an integer from 1 to "
            f"{points_per_class} (the labelled points per class); e.g. -k 5."
        )


#: what the demo writes in its folder (with the folder's marker)
_NAMES = {
    "field": "field.zarr",
    "truth": "truth.tif",
    "quicklook": "quicklook.png",
    "knn_map": "knn_classes.tif",
    "knn_confidence": "knn_confidence.tif",
    "clusters": "kmeans_clusters.tif",
    "summary": "summary.json",
}


def _plan_folder(out: Path) -> OutputSet:
    """Check the demo folder before anything is written; return its output set.

    The folder is one output: built aside and swapped in whole when complete. An existing
    folder is replaced only when an earlier demo made it and it holds nothing but the
    demo's own files; a folder that geoembed did not create, or files added to a demo
    folder, are never touched.
    """
    from geoembed.errors import OutputError
    from geoembed.export.outputs import MARKER_FILE, is_geoembed_output

    if out.exists() and not out.is_dir():
        raise OutputError(f"The demo output folder {str(out)!r} is a file; choose a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not is_geoembed_output(out):
            raise OutputError(
                f"The demo output folder {str(out)!r} already holds files that geoembed did "
                "not write; the demo replaces its own files only. Choose a new folder (out=)."
            )
        extra = sorted(
            p.name for p in out.iterdir() if p.name not in {*_NAMES.values(), MARKER_FILE}
        )
        if extra:
            raise OutputError(
                f"The demo output folder {str(out)!r} also holds {', '.join(extra[:5])}, "
                "which the demo did not write; the demo replaces its whole folder. Move them "
                "away or choose a new folder (out=)."
            )
    elif out.is_dir():  # an empty folder: ours to fill
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    return plan_outputs(
        {"demo output folder": out}, overwrite=True, directories={"demo output folder"}
    )


def run_demo(
    out: str | Path,
    *,
    size: int = 1024,
    seed: int = 0,
    chunks: int = 512,
    k: int = 5,
    points_per_class: int = 40,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the whole job on a synthetic scene and write every output under ``out``.

    Parameters
    ----------
    out : path
        Output folder: created (and marked as geoembed's), or one an earlier demo made,
        which is replaced whole once the new one is complete. A non-empty folder that
        geoembed did not create, or a demo folder holding other files, is refused.
    size : int
        The scene is ``size`` x ``size`` pixels (10 m).
    seed : int
        Seed of the scene, the label sample and KMeans.
    chunks : int
        Spatial chunk size.
    k : int
        Neighbours for kNN.
    points_per_class : int
        Labelled points sampled per class for training.
    progress : bool
        Show progress bars on stderr.

    Returns
    -------
    dict
        JSON-serialisable summary: output paths, accuracies, timings.

    Raises
    ------
    SchemaError, LabelError, OutputError
        Bad settings or output folder, before anything is written.
    """
    from geoembed.export.outputs import write_marker

    _check_options(size=size, chunks=chunks, k=k, points_per_class=points_per_class)
    out = Path(out)
    outputs = _plan_folder(out)
    summary: dict[str, Any] = {
        "scene": {"height": size, "width": size, "seed": seed, "synthetic": True},
        "outputs": {key: str(out / name) for key, name in _NAMES.items()},
        "seconds": {},
    }
    with outputs:  # the folder appears (or replaces the last demo's) when complete
        staged = Path(outputs.stage("demo output folder"))
        staged.mkdir()
        write_marker(staged, "demo output folder")
        _run(staged, summary, size=size, seed=seed, chunks=chunks, k=k,
             points_per_class=points_per_class, progress=progress)  # fmt: skip
        outputs.commit()
    return summary


def _run(
    folder: Path,
    summary: dict[str, Any],
    *,
    size: int,
    seed: int,
    chunks: int,
    k: int,
    points_per_class: int,
    progress: bool,
) -> None:
    """Write every demo output into ``folder`` and fill ``summary``."""
    from geoembed.assess import accuracy_from_confusion
    from geoembed.classify import classify_knn
    from geoembed.cluster import KMeans, adjusted_rand_index
    from geoembed.cluster.stats import contingency_table
    from geoembed.datasets import synthetic_scene
    from geoembed.export import write_cog, write_zarr
    from geoembed.io import open_embeddings
    from geoembed.labels import training_from_geometries
    from geoembed.viz.panel import panel_png

    paths = {key: folder / name for key, name in _NAMES.items()}
    t = t0 = time.perf_counter()

    scene = synthetic_scene(size, size, seed=seed, chunks=chunks)
    names = scene.class_names
    write_zarr(scene.field, paths["field"], progress=progress)
    write_cog(
        scene.truth,
        paths["truth"],
        class_names=names,
        colors=scene.colors,
        progress=progress,
    )
    t = _step(summary, "scene", t)

    # kNN from labelled points, on the field read back from Zarr as a user would.
    field = open_embeddings(paths["field"])
    labels = scene.sample_points(points_per_class, seed=seed + 1)
    training = training_from_geometries(field, labels, label_column="class_id")
    result = classify_knn(field, training, k=k)
    ids = [int(v) for v in training.class_values]
    knn_names = [names[i] for i in ids]
    knn_colors = {j: scene.colors[i] for j, i in enumerate(ids)}
    write_cog(
        result["classes"],
        paths["knn_map"],
        class_names=knn_names,
        colors=knn_colors,
        progress=progress,
    )
    write_cog(result["confidence"], paths["knn_confidence"], progress=progress)
    table = contingency_table(scene.truth, result["classes"], n_a=len(names), n_b=len(ids))
    confusion = table[ids, :]  # truth rows in the classifier's class order
    n_missed = int(table.sum() - confusion.sum())
    report = accuracy_from_confusion(confusion, class_names=knn_names)
    summary["knn"] = {
        "k": k,
        "training_points": len(training.y),
        "rejected": training.report.get("rejected", {}),
        "overall_accuracy": report["overall_accuracy"],
        "kappa": report["kappa"],
        "pixels_of_untrained_classes": n_missed,
    }
    t = _step(summary, "knn", t)

    import dask

    with dask.config.set({"geoembed.progress": bool(progress)}):  # one bar for the passes
        kmeans = KMeans(n_clusters=len(names), random_state=seed).fit(field)
    clusters = kmeans.predict(field)
    write_cog(
        clusters,
        paths["clusters"],
        class_names=[f"cluster {i}" for i in range(len(names))],
        progress=progress,
    )
    summary["kmeans"] = {
        "n_clusters": len(names),
        "inertia": float(kmeans.inertia_),
        "adjusted_rand_index": adjusted_rand_index(
            clusters, scene.truth, n_pred=len(names), n_truth=len(names)
        ),
    }
    t = _step(summary, "kmeans", t)

    panel_png(
        [
            ("field (first 3 principal components)", field),
            ("ground truth", paths["truth"]),
            (f"kNN (k={k}), OA {report['overall_accuracy']:.2f}", paths["knn_map"]),
            (f"KMeans ({len(names)} clusters)", paths["clusters"]),
        ],
        paths["quicklook"],
        title=f"geoembed demo: synthetic {size} x {size} px scene, seed {seed}",
        note="Synthetic AlphaEarth-like scene generated by geoembed (not real data).",
        ncols=2,
    )
    _step(summary, "quicklook", t)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    paths["summary"].write_text(json.dumps(marked(summary), indent=2, default=str))
