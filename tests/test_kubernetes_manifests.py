"""deploy/kubernetes/, read against the Kubernetes API schemas and against the code it deploys.

No cluster runs here. Every manifest is validated strictly (unknown fields refused) with
kubernetes-validate, which ships the API's JSON schemas (no network); KEDA's ScaledObject, a custom
resource, against tests/schemas/keda-scaledobject-v1alpha1.json. Then, as test_deploy_files.py does
for compose: every environment variable is a setting and parses, every container and probe command
parses with the CLI, the worker queues and the KEDA triggers match celeryconfig, the ports and the
health path match the API's.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from avatar_cli import build_parser
from celeryconfig import QUEUE_NAMES, STAGE_QUEUES
from jobs.events import HEARTBEAT_KEY
from jobs.settings import Settings, check_exposure, exposure_problems, is_loopback

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KEDA_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
# The oldest Kubernetes release the manifests must work on (1.30: current EKS, GKE and AKS all have it).
KUBERNETES_VERSION = "1.30.0"
SETTING_VARIABLES = {field.name.upper() for field in dataclasses.fields(Settings)}
# Read by boto3 (credentials and region the standard AWS way), not by our settings.
AWS_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
# The Downward API's pod name, used only to build WORKER_HOSTNAME.
POD_VARIABLES = {"POD_NAME"}
REQUIRED_SECRETS = {"JWT_SECRET_KEY", "WEBHOOK_SECRET", "UPLOAD_ENCRYPTION_KEY"}
# What an operator writes into secrets.env (secrets.env.example's keys).
OPERATOR_SECRETS = {"JWT_SECRET_KEY": "k" * 43, "WEBHOOK_SECRET": "w" * 43,
                    "UPLOAD_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s" * 40}
HEALTH_PATH = "/api/avatar/health"


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def documents(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object ``kubectl apply -k`` creates: the listed files' documents, and the generated Secret."""
    docs = []
    for name in kustomization["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    for generator in kustomization["secretGenerator"]:
        (envs,) = generator["envs"]
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]},
                     "type": "Opaque", "stringData": secret_keys(K8S / f"{envs}.example")})
    return docs


def secret_keys(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file, comments left out."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def workloads(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] in ("Deployment", "CronJob")}


def container_env(documents: list[dict[str, Any]], container: dict[str, Any], pod_name: str = "pod-1") -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom's ConfigMap and Secret (the
    operator's values), then env, ``$(NAME)`` expanded from what is defined before it."""
    configmaps = of_kind(documents, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            assert source["secretRef"]["name"] in of_kind(documents, "Secret")
            env.update(OPERATOR_SECRETS)
    for item in container.get("env", []):
        if "valueFrom" in item:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod_name
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
    return env


def test_kustomize_lists_every_manifest_and_nothing_else(kustomization: dict[str, Any]) -> None:
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert kustomization["namespace"] == "avatar"


def test_every_manifest_validates_strictly(documents: list[dict[str, Any]]) -> None:
    """Against the Kubernetes API's schemas (unknown fields refused); KEDA's against its own."""
    for doc in documents:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_wrong_field_fails_validation(documents: list[dict[str, Any]]) -> None:
    """The validators refuse what a typo makes (the checks above can fail)."""
    api = json.loads(json.dumps(of_kind(documents, "Deployment")["api"]))
    pod_spec(api)["containers"][0]["resource"] = pod_spec(api)["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)
    scaled = json.loads(json.dumps(of_kind(documents, "ScaledObject")["worker-cpu"]))
    scaled["spec"]["triggers"][0]["metadata"]["listname"] = "cpu"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


def test_every_environment_variable_is_a_setting_and_parses(documents: list[dict[str, Any]]) -> None:
    for name, workload in workloads(documents).items():
        for container in pod_spec(workload)["containers"]:
            env = container_env(documents, container)
            unknown = set(env) - SETTING_VARIABLES - AWS_VARIABLES - POD_VARIABLES
            assert not unknown, f"{name}: no setting reads {sorted(unknown)}"
            Settings.from_env(environ=env)  # raises on a value of the wrong kind


def test_the_secrets_are_the_three_the_api_requires_and_ship_empty(documents: list[dict[str, Any]]) -> None:
    """secrets.env.example has no usable value: an API started from it refuses to listen."""
    shipped = secret_keys(K8S / "secrets.env.example")
    assert REQUIRED_SECRETS <= set(shipped) and set(shipped) - REQUIRED_SECRETS <= AWS_VARIABLES
    assert all(value == "" for value in shipped.values())
    unfilled = Settings.from_env(environ={**of_kind(documents, "ConfigMap")["avatar-config"]["data"], **shipped,
                                          "HOST": "0.0.0.0"})
    assert len(exposure_problems(unfilled)) == 3
    assert "secrets.env" in (ROOT / ".gitignore").read_text()


def test_the_api_listens_where_its_service_and_probes_point(documents: list[dict[str, Any]]) -> None:
    deployment = of_kind(documents, "Deployment")["api"]
    (container,) = pod_spec(deployment)["containers"]
    env = container_env(documents, container)
    settings = Settings.from_env(environ=env)
    assert not is_loopback(settings.host)
    check_exposure(settings)  # raises if a development secret were left
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    service = of_kind(documents, "Service")["api"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # Readiness: the public health status code, from the node (no details needed).
    assert container["readinessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": port["name"]}
    from api.health import bp
    assert f"{bp.url_prefix}/health" == HEALTH_PATH
    for probe in ("livenessProbe", "startupProbe"):
        args = build_parser().parse_args(container[probe]["exec"]["command"][1:])
        assert (args.command, args.role) == ("probe", "api")


def test_container_commands_parse_and_the_workers_serve_every_queue(documents: list[dict[str, Any]]) -> None:
    served: dict[str, str] = {}
    for name, workload in workloads(documents).items():
        for container in pod_spec(workload)["containers"]:
            argv = container["command"]
            assert argv[0] == "avatar"
            args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown subcommand or flag
            if args.command == "worker":
                assert not args.per_gpu, f"{name}: one GPU per pod, not every GPU of the node"
                for queue in args.queues.split(","):
                    served[queue] = name
    assert set(served) == set(QUEUE_NAMES)


def test_each_worker_queue_scales_on_its_redis_list(documents: list[dict[str, Any]]) -> None:
    deployments = of_kind(documents, "Deployment")
    config = of_kind(documents, "ConfigMap")["avatar-config"]["data"]
    redis_url = urlparse(config["REDIS_URL"])
    scaled = of_kind(documents, "ScaledObject")
    queues_scaled = set()
    for name, scaled_object in scaled.items():
        target = deployments[scaled_object["spec"]["scaleTargetRef"]["name"]]
        (container,) = pod_spec(target)["containers"]
        consumes = build_parser().parse_args(container["command"][1:]).queues.split(",")
        (trigger,) = scaled_object["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] in consumes, (name, consumes)
        assert trigger["metadata"]["address"] == f"{redis_url.hostname}:{redis_url.port}"
        assert trigger["metadata"]["databaseIndex"] == redis_url.path.strip("/")
        queues_scaled.add(trigger["metadata"]["listName"])
        # KEDA owns the replica count; the Deployment's own is only the first one.
        assert scaled_object["spec"]["minReplicaCount"] <= target["spec"]["replicas"]
    assert queues_scaled == set(QUEUE_NAMES)


def test_gpu_workers_take_one_gpu_per_pod_and_only_the_gpu_queue(documents: list[dict[str, Any]]) -> None:
    for name, deployment in of_kind(documents, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        resources = container["resources"]
        args = build_parser().parse_args(container["command"][1:])
        if "nvidia.com/gpu" in resources.get("limits", {}):
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
            assert args.queues == "gpu" and args.pool == "threads"
            env = Settings.from_env(environ=container_env(documents, container))
            assert env.inference_batch_max > 1 and env.worker_concurrency == args.concurrency
        else:
            assert "gpu" not in (getattr(args, "queues", "") or "").split(","), f"{name} serves gpu without one"


def test_the_worker_probe_finds_the_heartbeat_its_worker_writes(documents: list[dict[str, Any]]) -> None:
    from worker.runtime import WorkerRuntime

    for name, deployment in of_kind(documents, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        if container["command"][1] != "worker":
            continue
        settings = Settings.from_env(environ=container_env(documents, container, pod_name=f"{name}-7d9f-x2"))
        assert settings.worker_hostname.endswith(f"@{name}-7d9f-x2")
        probe = build_parser().parse_args(container["livenessProbe"]["exec"]["command"][1:])
        assert (probe.command, probe.role, probe.hostname) == ("probe", "worker", None)  # WORKER_HOSTNAME
        assert container["startupProbe"]["exec"] == container["livenessProbe"]["exec"]
        # What `avatar probe worker` scans for matches the key each of the node's processes writes...
        pattern = HEARTBEAT_KEY.format(name=f"{settings.worker_hostname}:*")
        process_name = WorkerRuntime.process_name.fget(SimpleNamespace(hostname=settings.worker_hostname))
        assert fnmatch.fnmatchcase(HEARTBEAT_KEY.format(name=process_name), pattern)
        # ... and not another pod's.
        other = Settings.from_env(environ=container_env(documents, container, pod_name=f"{name}-other"))
        assert not fnmatch.fnmatchcase(HEARTBEAT_KEY.format(name=f"{other.worker_hostname}:42"), pattern)
        # A stopping pod may finish the stage (or webhook attempt) it runs.
        queues = build_parser().parse_args(container["command"][1:]).queues.split(",")
        longest = settings.job_timeout_s if set(queues) & set(STAGE_QUEUES) else settings.webhook_timeout_s
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > longest, name


def test_the_reconciler_runs_once_fleet_wide_and_not_inside_the_workers(documents: list[dict[str, Any]]) -> None:
    for name, workload in workloads(documents).items():
        (container,) = pod_spec(workload)["containers"]
        settings = Settings.from_env(environ=container_env(documents, container))
        if container["command"][1] == "worker":
            assert settings.reconcile_interval_s == 0, name
        if container["command"][1] == "reconciler":
            assert settings.reconcile_interval_s > 0


def test_every_container_has_requests_and_a_memory_limit_and_runs_unprivileged(documents: list[dict[str, Any]]) -> None:
    for name, workload in [*workloads(documents).items(), *of_kind(documents, "StatefulSet").items()]:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"], name
        for container in spec["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name


def test_files_go_to_object_storage_and_our_images_are_the_ones_built(documents: list[dict[str, Any]],
                                                                      kustomization: dict[str, Any]) -> None:
    from jobs.storage import S3Storage, storage_from_settings

    config = of_kind(documents, "ConfigMap")["avatar-config"]["data"]
    assert isinstance(storage_from_settings(Settings.from_env(environ=config)), S3Storage)
    ours = {image["name"] for image in kustomization["images"]}
    used = {container["image"] for workload in workloads(documents).values()
            for container in pod_spec(workload)["containers"]}
    assert used == ours
    dockerfiles = {path.name.removeprefix("Dockerfile.") for path in (ROOT / "docker").glob("Dockerfile.*")}
    assert {image.rpartition("/")[2] for image in ours} == dockerfiles
