"""Offline validation of the Kubernetes manifests in k8s/ (no cluster needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("dask_kubernetes")

from geoembed.runtime.k8s import load_manifest, render_daskjob  # noqa: E402

K8S = Path(__file__).resolve().parents[1] / "k8s"


def crd_schema(kind: str) -> dict[str, Any]:
    import dask_kubernetes

    base = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
    path = base / "dask-kubernetes-operator" / "crds" / f"{kind.lower()}.yaml"
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def pods(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]
    if manifest["kind"] == "DaskCluster":
        return [spec["worker"]["spec"], spec["scheduler"]["spec"]]
    return [spec["job"]["spec"], *pods({"kind": "DaskCluster", "spec": spec["cluster"]["spec"]})]


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskjob.yaml"])
def test_dask_resources_match_crd(name):
    manifest = load_manifest(K8S / name)
    jsonschema.validate(manifest, crd_schema(manifest["kind"]))


def test_crd_validation_rejects_wrong_type():
    manifest = load_manifest(K8S / "daskcluster.yaml")
    manifest["spec"]["worker"]["replicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, crd_schema("DaskCluster"))


def test_daskjob_is_in_sync_with_daskcluster():
    assert (K8S / "daskjob.yaml").read_text() == render_daskjob(K8S)


def test_core_objects_validate_strict():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            str(K8S / "rbac.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskjob.yaml"])
def test_pod_security_restricted(name):
    for pod in pods(load_manifest(K8S / name)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        mounts_ok = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] == c["resources"]["limits"]
            assert not c["image"].endswith(":latest") and ":" in c["image"]
            assert {m["name"] for m in c["volumeMounts"]} <= mounts_ok
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
            assert "--jupyter" not in c.get("args", [])


def test_worker_memory_limit_below_container_limit():
    cluster = load_manifest(K8S / "daskcluster.yaml")
    c = cluster["spec"]["worker"]["spec"]["containers"][0]
    args = c["args"]
    dask_limit = args[args.index("--memory-limit") + 1]
    to_gib = {"GiB": 1, "Gi": 1}
    value = next(float(dask_limit[: -len(u)]) for u in to_gib if dask_limit.endswith(u))
    container = float(c["resources"]["limits"]["memory"].removesuffix("Gi"))
    assert value < container


def test_scheduler_private_and_off_spot():
    cluster = load_manifest(K8S / "daskcluster.yaml")
    sched = cluster["spec"]["scheduler"]
    assert sched["service"]["type"] == "ClusterIP"
    terms = sched["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"} in terms[0][
        "matchExpressions"
    ]


def test_rbac_least_privilege():
    docs = list(yaml.safe_load_all((K8S / "rbac.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert "iam.gke.io/gcp-service-account" in sa["metadata"]["annotations"]
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert "secrets" not in rule["resources"]
