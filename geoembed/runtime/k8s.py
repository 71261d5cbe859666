"""Kubernetes manifests for geoembed jobs (dask-kubernetes operator resources).

``k8s/daskcluster.yaml`` is the one hand-written cluster spec; a DaskJob (a batch job that
brings its own cluster up and tears it down) is derived from it by :func:`daskjob_manifest`,
so the two never drift apart. ``k8s/networkpolicy.yaml`` is generated too
(:func:`networkpolicy_manifests`): a namespace-wide default deny of ingress, and for each
of those clusters a policy that admits only the cluster's own pods (scheduler, workers,
the DaskJob's runner) and the operator.

Regenerate both after editing ``daskcluster.yaml``: ``python -m geoembed.runtime.k8s k8s``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "daskjob_manifest",
    "default_deny_ingress",
    "load_manifest",
    "networkpolicy_manifests",
    "render_daskjob",
    "render_networkpolicies",
]

#: labels the dask-kubernetes operator puts on its own pods (Helm chart defaults)
OPERATOR_LABELS = {"app.kubernetes.io/name": "dask-kubernetes-operator"}


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read one YAML manifest."""
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def daskjob_manifest(
    cluster: dict[str, Any],
    command: Sequence[str],
    *,
    name: str = "geoembed-job",
) -> dict[str, Any]:
    """Build a DaskJob that runs a ``geoembed`` command against its own DaskCluster.

    Parameters
    ----------
    cluster : dict
        A DaskCluster manifest (``k8s/daskcluster.yaml``); its spec is reused as is.
    command : sequence of str
        The geoembed arguments after ``--scheduler``, e.g.
        ``["classify", "gs://b/field.zarr", "--labels", ...]``.
    name : str
        Name of the DaskJob.

    Returns
    -------
    dict
        The DaskJob manifest. The job pod reaches the scheduler through the
        ``DASK_SCHEDULER_ADDRESS`` variable that the operator injects.
    """
    cluster_spec = _rename_scheduler(
        copy.deepcopy(cluster["spec"]), cluster["metadata"]["name"], name
    )
    worker_pod = cluster_spec["worker"]["spec"]
    container = copy.deepcopy(worker_pod["containers"][0])
    container["name"] = "job"
    container["args"] = ["geoembed", "--scheduler", "$(DASK_SCHEDULER_ADDRESS)", *command]
    container["resources"] = {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "1", "memory": "4Gi"},
    }
    job_pod = {
        key: copy.deepcopy(worker_pod[key])
        for key in (
            "serviceAccountName",
            "automountServiceAccountToken",
            "securityContext",
            "volumes",
        )
    }
    job_pod["restartPolicy"] = "Never"
    job_pod["affinity"] = copy.deepcopy(cluster_spec["scheduler"]["spec"]["affinity"])
    job_pod["containers"] = [container]
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskJob",
        "metadata": {
            "name": name,
            "namespace": cluster["metadata"]["namespace"],
            "labels": dict(cluster["metadata"].get("labels", {})),
        },
        "spec": {"job": {"spec": job_pod}, "cluster": {"spec": cluster_spec}},
    }


def _rename_scheduler(spec: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Point explicit scheduler addresses and selectors of cluster ``old`` at cluster ``new``.

    The operator names a DaskJob's cluster after the job, so its scheduler service is
    ``<job>-scheduler``; ``DASK_SCHEDULER_ADDRESS`` set in the cluster spec (needed for
    ``tls://``) must follow.
    """
    for role in ("worker", "scheduler"):
        for container in spec[role]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] == "DASK_SCHEDULER_ADDRESS":
                    env["value"] = env["value"].replace(
                        f"//{old}-scheduler.", f"//{new}-scheduler."
                    )
    selector = spec["scheduler"].get("service", {}).get("selector", {})
    if selector.get("dask.org/cluster-name") == old:
        selector["dask.org/cluster-name"] = new
    return spec


def networkpolicy_manifests(cluster_name: str, namespace: str) -> list[dict[str, Any]]:
    """NetworkPolicies that admit only a Dask cluster's own pods (and the operator).

    Parameters
    ----------
    cluster_name : str
        Name of the DaskCluster (for a DaskJob: the job's name).
    namespace : str
        Namespace of the cluster.

    Returns
    -------
    list of dict
        Two policies: every pod of the cluster accepts traffic from the cluster's pods
        (scheduler, workers, job runner) on any port (workers listen on random ports);
        the scheduler also accepts the operator on its comm and dashboard ports.
    """
    cluster = {"dask.org/cluster-name": cluster_name}
    labels = {"app.kubernetes.io/name": "geoembed"}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": f"{cluster_name}-internal",
                "namespace": namespace,
                "labels": labels,
            },
            "spec": {
                "podSelector": {"matchLabels": dict(cluster)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": dict(cluster)}}]}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": f"{cluster_name}-scheduler-operator",
                "namespace": namespace,
                "labels": labels,
            },
            "spec": {
                "podSelector": {"matchLabels": {**cluster, "dask.org/component": "scheduler"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": dict(OPERATOR_LABELS)}}],
                        "ports": [
                            {"protocol": "TCP", "port": 8786},
                            {"protocol": "TCP", "port": 8787},
                        ],
                    }
                ],
            },
        },
    ]


def default_deny_ingress(namespace: str) -> dict[str, Any]:
    """Build the policy that denies ingress to pods of ``namespace`` not admitted elsewhere."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "default-deny-ingress",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "geoembed"},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


#: the example command written into ``k8s/daskjob.yaml``
EXAMPLE_COMMAND: list[str] = [
    "classify",
    "gs://my-bucket/field.zarr",
    "--labels",
    "gs://my-bucket/labels.gpkg",
    "--label-column",
    "class",
    "-k",
    "5",
    "-o",
    "gs://my-bucket/map.tif",
    "--report",
    "gs://my-bucket/report.json",
]

DASKJOB_HEADER = (
    "# Generated by geoembed.runtime.k8s.daskjob_manifest from daskcluster.yaml "
    "(a test checks they are in sync).\n"
    "# Edit daskcluster.yaml, then regenerate: python -m geoembed.runtime.k8s k8s\n"
)


NETWORKPOLICY_HEADER = (
    "# Generated by geoembed.runtime.k8s.networkpolicy_manifests for the clusters of\n"
    "# daskcluster.yaml and daskjob.yaml (a test checks they are in sync). Regenerate:\n"
    "# python -m geoembed.runtime.k8s k8s\n"
    "# Needs a CNI that enforces NetworkPolicy (GKE Dataplane V2, or Calico).\n"
)


def render_daskjob(k8s_dir: str | Path) -> str:
    """Text of ``k8s/daskjob.yaml`` derived from ``k8s/daskcluster.yaml``."""
    import yaml

    cluster = load_manifest(Path(k8s_dir) / "daskcluster.yaml")
    job = daskjob_manifest(cluster, EXAMPLE_COMMAND)
    return DASKJOB_HEADER + yaml.safe_dump(job, sort_keys=False)


def render_networkpolicies(k8s_dir: str | Path) -> str:
    """Text of ``k8s/networkpolicy.yaml`` for the DaskCluster and the DaskJob's cluster."""
    import yaml

    cluster = load_manifest(Path(k8s_dir) / "daskcluster.yaml")
    namespace = cluster["metadata"]["namespace"]
    docs = [default_deny_ingress(namespace)]
    for name in (cluster["metadata"]["name"], "geoembed-job"):
        docs.extend(networkpolicy_manifests(name, namespace))
    return NETWORKPOLICY_HEADER + yaml.safe_dump_all(docs, sort_keys=False)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "k8s")
    (target / "daskjob.yaml").write_text(render_daskjob(target))
    (target / "networkpolicy.yaml").write_text(render_networkpolicies(target))
