"""Offline validation of the Kubernetes manifests in k8s/ (no cluster needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("dask_kubernetes")

from geoembed.runtime.k8s import (  # noqa: E402
    load_manifest,
    render_daskjob,
    render_networkpolicies,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DIGEST_REF = re.compile(r"[a-z0-9.\-/]+(:[\w.\-]+)?@sha256:[0-9a-f]{64}")


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


def test_networkpolicy_is_in_sync_with_daskcluster():
    assert (K8S / "networkpolicy.yaml").read_text() == render_networkpolicies(K8S)


@pytest.mark.parametrize("name", ["rbac.yaml", "networkpolicy.yaml"])
def test_core_objects_validate_strict(name):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            str(K8S / name),
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
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
        assert {v["name"] for v in pod["volumes"]} == scratch | secrets
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] == c["resources"]["limits"]
            assert DIGEST_REF.fullmatch(c["image"]), c["image"]
            for mount in c["volumeMounts"]:
                assert mount["name"] in scratch or (
                    mount["name"] in secrets and mount["readOnly"] is True
                )
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


def test_image_digest_pattern_rejects_tags():
    assert not DIGEST_REF.fullmatch("ghcr.io/geoembed/geoembed:0.1.0")
    assert not DIGEST_REF.fullmatch("ghcr.io/geoembed/geoembed:latest")
    assert DIGEST_REF.fullmatch("ghcr.io/geoembed/geoembed:0.1.0@sha256:" + "ab" * 32)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskjob.yaml"])
def test_dask_traffic_is_mutual_tls(name):
    manifest = load_manifest(K8S / name)
    cluster_name = manifest["metadata"]["name"]
    for pod in pods(manifest):
        secret_dirs = {
            m["mountPath"]
            for c in pod["containers"]
            for m in c["volumeMounts"]
            if any(v["name"] == m["name"] and "secret" in v for v in pod["volumes"])
        }
        for c in pod["containers"]:
            env = _env(c)
            assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
            tls_files = [v for k, v in env.items() if k.startswith("DASK_DISTRIBUTED__COMM__TLS")]
            assert len(tls_files) == 7
            assert all(str(Path(f).parent) in secret_dirs for f in tls_files)
            if "DASK_SCHEDULER_ADDRESS" in env:
                assert env["DASK_SCHEDULER_ADDRESS"].startswith(f"tls://{cluster_name}-scheduler.")
    scheduler = (manifest["spec"].get("cluster", manifest)["spec"])["scheduler"]["spec"]
    args = scheduler["containers"][0]["args"]
    assert args[args.index("--protocol") + 1] == "tls"


def _policies() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / "networkpolicy.yaml").read_text()) if d]


def test_networkpolicy_denies_by_default():
    deny = [p for p in _policies() if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny[0]["spec"]


@pytest.mark.parametrize("name", ["daskcluster.yaml", "daskjob.yaml"])
def test_networkpolicy_admits_only_the_clusters_own_pods(name):
    manifest = load_manifest(K8S / name)
    cluster_name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    label = {"dask.org/cluster-name": cluster_name}
    mine = [
        p
        for p in _policies()
        if p["spec"]["podSelector"].get("matchLabels", {}).get("dask.org/cluster-name")
        == cluster_name
    ]
    assert mine, f"no NetworkPolicy selects the pods of {cluster_name}"
    internal = [p for p in mine if p["spec"]["podSelector"]["matchLabels"] == label]
    assert len(internal) == 1
    for policy in mine:
        assert policy["metadata"]["namespace"] == namespace
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                # only pod selectors in the namespace: no ipBlock, no namespaceSelector
                assert set(peer) == {"podSelector"}, peer
                sel = peer["podSelector"]["matchLabels"]
                assert sel == label or sel == {"app.kubernetes.io/name": "dask-kubernetes-operator"}
    operator_rules = [
        r
        for p in mine
        for r in p["spec"]["ingress"]
        if r["from"][0]["podSelector"]["matchLabels"] != label
    ]
    for rule in operator_rules:  # the operator reaches only the scheduler's two ports
        assert sorted(port["port"] for port in rule["ports"]) == [8786, 8787]


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["cnn"], *extras["k8s"], *extras["cloud"]]


def test_dockerfile_installs_with_the_constraints_file():
    text = (K8S / "Dockerfile").read_text()
    assert "COPY k8s/constraints.txt" in text
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert ".[cnn,k8s,cloud]" in installs[0]


def test_constraints_pin_every_runtime_dependency():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (K8S / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = version
    for text in _requirements():
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in k8s/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def _write_pems(directory: Path) -> Any:
    from distributed import Security

    sec = Security.temporary()
    directory.mkdir(exist_ok=True)
    (directory / "ca.crt").write_text(sec.tls_ca_file)
    (directory / "tls.crt").write_text(sec.tls_client_cert)
    (directory / "tls.key").write_text(sec.tls_client_key)
    return sec


def _dask_env(container: dict[str, Any], pem_dir: Path) -> dict[str, str]:
    return {
        k: v.replace("/etc/dask-tls", str(pem_dir))
        for k, v in _env(container).items()
        if k.startswith("DASK_DISTRIBUTED__COMM")
    }


def test_tls_environment_configures_every_role(tmp_path):
    """The variable names in the manifests are ones Dask reads (a typo would be plain TCP)."""
    import dask
    from distributed import Security

    _write_pems(tmp_path)
    manifest = load_manifest(K8S / "daskjob.yaml")
    for pod in pods(manifest):
        env = _dask_env(pod["containers"][0], tmp_path)
        # as Dask reads DASK_* variables: "__" nests, values are YAML
        dotted = {k[5:].lower().replace("__", "."): yaml.safe_load(v) for k, v in env.items()}
        with dask.config.set(dotted):
            sec = Security()
        assert sec.require_encryption is True
        assert sec.tls_ca_file == str(tmp_path / "ca.crt")
        for role in ("scheduler", "worker", "client"):
            assert getattr(sec, f"tls_{role}_cert") == str(tmp_path / "tls.crt")
            assert getattr(sec, f"tls_{role}_key") == str(tmp_path / "tls.key")


def test_job_pod_environment_reaches_a_tls_scheduler(tmp_path, aef_tif):
    """The DaskJob's client, configured only by its pod's environment, talks TLS."""
    import os

    from distributed import LocalCluster

    sec = _write_pems(tmp_path / "tls")
    job = load_manifest(K8S / "daskjob.yaml")["spec"]["job"]["spec"]["containers"][0]
    env = {**os.environ, **_dask_env(job, tmp_path / "tls")}
    with LocalCluster(
        n_workers=1,
        processes=True,
        protocol="tls://",
        host="127.0.0.1",
        security=sec,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        cmd = [sys.executable, "-c", "from geoembed.cli import main; main()"]
        args = ["--scheduler", cluster.scheduler_address, "info", str(aef_tif)]
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "97" in proc.stdout
        # without the TLS settings the same command is refused with one line
        plain = {k: v for k, v in env.items() if not k.startswith("DASK_DISTRIBUTED__COMM")}
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180, env=plain)
        assert proc.returncode == 2 and "no certificates" in proc.stderr
