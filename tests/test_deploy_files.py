"""docker-compose.yml and the Dockerfiles, read against the code they deploy.

No Docker engine runs here, so the images are never built in the tests. These checks catch the
drift that would only show on a deployment: an environment variable no setting reads, a package an
image does not copy, a container command the CLI rejects, a healthcheck that looks for a key the
workers do not write.
"""
from __future__ import annotations

import base64
import dataclasses
import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from avatar_cli import build_parser
from jobs.events import HEARTBEAT_KEY
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"api": "docker/Dockerfile.api", "worker-cpu": "docker/Dockerfile.worker",
               "worker-webhooks": "docker/Dockerfile.worker", "worker-gpu": "docker/Dockerfile.worker-gpu"}
# Read by Python or pip inside the images, not by our settings.
RUNTIME_VARIABLES = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
# Read by boto3 for the object storage (jobs/storage.py): credentials and region the standard AWS way.
AWS_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
SETTING_VARIABLES = {field.name.upper() for field in dataclasses.fields(Settings)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# What an operator sets for compose's ``${NAME...}`` (a new one must be added here).
OPERATOR_VALUES = {"JWT_SECRET_KEY": "k" * 43, "UPLOAD_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode(),
                   "WEBHOOK_SECRET": "w" * 43, "TRUSTED_PROXIES": "1", "LOG_FORMAT": "json",
                   "GRAFANA_ADMIN_PASSWORD": "g" * 20,
                   # The minio profile, as the file's header tells an operator to set it.
                   "STORAGE_URL": "s3://avatars/", "S3_ENDPOINT_URL": "http://minio:9000",
                   "S3_PUBLIC_ENDPOINT_URL": "", "DOWNLOAD_PRESIGN_S": "0",
                   "AWS_ACCESS_KEY_ID": "avatar-minio", "AWS_SECRET_ACCESS_KEY": "m" * 32, "AWS_REGION": "us-east-1"}


def interpolated(value: str) -> str:
    """A compose value with each ``${NAME...}`` replaced by what an operator sets."""
    return re.sub(r"\$\{([A-Z0-9_]+)[^}]*\}", lambda m: OPERATOR_VALUES[m.group(1)], value)


def service_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    """The environment compose gives ``service`` plus what its image sets with ENV."""
    env = dockerfile_env(DOCKERFILES[service])
    env.update({name: interpolated(str(value))
                for name, value in compose["services"][service].get("environment", {}).items()})
    return env


def dockerfile_lines(path: str) -> list[str]:
    """Instructions with their continuation lines joined."""
    return re.sub(r"\\\n\s*", " ", (ROOT / path).read_text()).splitlines()


def dockerfile_env(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile_lines(path):
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def test_the_services_are_the_ones_the_issue_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "mongo", "api", "worker-cpu", "worker-webhooks", "worker-gpu",
                             "minio", "minio-bucket", "prometheus", "grafana"}
    assert services["redis"]["image"].startswith("redis:7.") and services["mongo"]["image"].startswith("mongo:7.")
    for name in ("redis", "mongo"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in ("api", "worker-cpu", "worker-webhooks", "worker-gpu"):
        assert services[name]["build"]["dockerfile"] == DOCKERFILES[name]
        expected = {"redis": {"condition": "service_healthy"}, "mongo": {"condition": "service_healthy"}}
        if name != "worker-webhooks":  # the webhook workers touch no file
            # Only when the minio profile runs it.
            expected["minio-bucket"] = {"condition": "service_completed_successfully", "required": False}
        assert services[name]["depends_on"] == expected


def test_the_minio_profile_makes_the_bucket_the_services_are_told_to_use(compose: dict[str, Any]) -> None:
    """MinIO and its one-shot bucket job run only under the profile; the bucket made is the one
    STORAGE_URL names, the services reach MinIO at S3_ENDPOINT_URL and sign as its root user."""
    from jobs.storage import S3Storage, storage_from_settings

    services = compose["services"]
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["minio"]
    assert all("profiles" not in services[name]
               for name in ("redis", "mongo", "api", "worker-cpu", "worker-webhooks", "worker-gpu"))
    for name in ("api", "worker-cpu", "worker-webhooks", "worker-gpu"):
        env = service_environment(compose, name)
        storage = storage_from_settings(Settings.from_env(environ=env))
        assert isinstance(storage, S3Storage) and storage.endpoint_url == "http://minio:9000"
    minio_env = {k: interpolated(str(v)) for k, v in services["minio"]["environment"].items()}
    assert minio_env == {"MINIO_ROOT_USER": env["AWS_ACCESS_KEY_ID"], "MINIO_ROOT_PASSWORD": env["AWS_SECRET_ACCESS_KEY"]}
    job = services["minio-bucket"]
    assert job["image"] == services["minio"]["image"]
    assert job["depends_on"] == {"minio": {"condition": "service_healthy"}}
    # The job's shell script, run as compose hands it over ($$ is a literal $), makes the bucket.
    script = job["command"][0].replace("$$", "$")
    bucket_env = {k: interpolated(str(v)) for k, v in job["environment"].items()}
    made = subprocess.run(["sh", "-c", script.replace("mc ", "echo mc ")], env=bucket_env,
                          capture_output=True, text=True, check=True).stdout.split()
    assert made[-1] == f"avatar/{storage.bucket}", made


def test_the_gpu_worker_reserves_every_gpu_and_serves_only_the_gpu_queue(compose: dict[str, Any]) -> None:
    service = compose["services"]["worker-gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    # Every GPU of the host, one worker process each (replicas of one service cannot be told apart
    # to pick a GPU: with `count: 1` they would all land on GPU 0).
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] == "all" for d in devices)
    args = build_parser().parse_args(container_argv(compose, "worker-gpu")[1:])
    assert args.per_gpu and args.queues == "gpu"
    assert service_environment(compose, "worker-gpu")["WORKER_QUEUES"] == "gpu"
    assert service_environment(compose, "worker-cpu")["WORKER_QUEUES"] == "cpu"
    assert any(".[gpu]" in line for line in dockerfile_lines(DOCKERFILES["worker-gpu"]))


def test_webhooks_are_delivered_by_their_own_threads_pool_workers(compose: dict[str, Any]) -> None:
    from celeryconfig import WEBHOOK_QUEUE, task_routes

    env = service_environment(compose, "worker-webhooks")
    assert env["WORKER_QUEUES"] == WEBHOOK_QUEUE == task_routes["avatar.webhook"]["queue"]
    settings = Settings.from_env(environ=env)
    assert settings.worker_pool == "threads" and settings.worker_concurrency > 1
    for service in ("worker-cpu", "worker-gpu"):
        assert WEBHOOK_QUEUE not in service_environment(compose, service)["WORKER_QUEUES"]


def test_the_api_and_every_worker_share_one_data_volume(compose: dict[str, Any]) -> None:
    mounts = {}
    for name in ("api", "worker-cpu", "worker-gpu"):
        data_dir = service_environment(compose, name)["DATA_DIR"]
        volumes = (mount.partition(":") for mount in compose["services"][name]["volumes"])
        mounts[name] = {volume for volume, _, path in volumes if path == data_dir}
        assert mounts[name], f"{name} mounts nothing at its DATA_DIR {data_dir}"
    shared = set.intersection(*mounts.values())
    assert shared and shared <= set(compose["volumes"])


@pytest.mark.parametrize("service", ["api", "worker-cpu", "worker-webhooks", "worker-gpu"])
def test_every_environment_variable_is_a_setting_and_parses(compose: dict[str, Any], service: str) -> None:
    env = service_environment(compose, service)
    unknown = set(env) - SETTING_VARIABLES - RUNTIME_VARIABLES - AWS_VARIABLES
    assert not unknown, f"{service}: no setting reads {sorted(unknown)}"
    settings = Settings.from_env(environ=env)  # raises on a value of the wrong kind
    assert str(settings.data_dir) == env["DATA_DIR"]


@pytest.mark.parametrize("service", ["api", "worker-cpu", "worker-gpu"])
def test_each_image_copies_every_package_the_project_installs(service: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {pattern.rstrip("*") for pattern in project["packages"]["find"]["include"]}
    needed |= {f"{module}.py" for module in project["py-modules"]}
    copied: set[str] = set()
    for line in dockerfile_lines(DOCKERFILES[service]):
        if line.startswith("COPY ") and "--from=" not in line:  # not from another build stage
            sources = shlex.split(line[5:])[:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{DOCKERFILES[service]} copies {source}: not in the repo"
            copied.update(sources)
    assert needed <= copied, f"{DOCKERFILES[service]} does not copy {sorted(needed - copied)}"


def test_the_api_image_builds_the_web_page_script_as_make_install_does() -> None:
    """The page's script is not in the repository: the API image must build it with the same npm
    script as ``make install`` and copy the result to where the package expects it."""
    lines = dockerfile_lines(DOCKERFILES["api"])
    scripts = json.loads((ROOT / "package.json").read_text())["scripts"]
    assert "RUN npm run build:web" in lines
    outfile = re.search(r"--outfile=(\S+)", scripts["build:web"]).group(1)
    built_dir = str(Path(outfile).parent)
    make_bundle = re.search(r"^WEB_BUNDLE := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert make_bundle == outfile
    assert any(re.fullmatch(rf"COPY --from=\S+ /\S+/{re.escape(built_dir)} {re.escape(built_dir)}", line)
               for line in lines), f"{DOCKERFILES['api']} does not copy the built {built_dir}"


def container_argv(compose: dict[str, Any], service: str, hostname: str = "host1") -> list[str]:
    """The image's CMD as the container runs it: a shell form's variables expanded as the container
    sets them (``hostname`` for ``$(hostname)``)."""
    (cmd_line,) = [line for line in dockerfile_lines(DOCKERFILES[service]) if line.startswith("CMD ")]
    argv = yaml.safe_load(cmd_line[4:])  # the exec form is a JSON array
    if argv[:2] == ["sh", "-c"]:
        env = service_environment(compose, service)
        script = argv[2].replace("$(hostname)", hostname)
        argv = shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], script))
        assert argv[0] == "exec"
        argv = argv[1:]
    return argv


@pytest.mark.parametrize("service", ["api", "worker-cpu", "worker-webhooks", "worker-gpu"])
def test_each_container_command_is_one_the_cli_accepts(compose: dict[str, Any], service: str) -> None:
    argv = container_argv(compose, service)
    assert argv[0] == "avatar"
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown subcommand or flag
    assert args.command == ("api" if service == "api" else "worker")


@pytest.mark.parametrize("service", ["worker-cpu", "worker-webhooks", "worker-gpu"])
def test_the_worker_healthcheck_finds_the_heartbeat_its_workers_write(compose: dict[str, Any],
                                                                     service: str) -> None:
    from worker.runtime import WorkerRuntime

    (check,) = [line for line in dockerfile_lines(DOCKERFILES[service]) if line.startswith("HEALTHCHECK ")]
    pattern = re.search(r"match=f'([^']+)'", check).group(1).replace("{socket.gethostname()}", "host1")
    # The node the image's CMD starts in a container named host1, and the key each of its
    # processes writes (WorkerRuntime.process_name is "<node name>:<pid>").
    node = build_parser().parse_args(container_argv(compose, service, "host1")[1:]).hostname
    process_name = WorkerRuntime.process_name.fget(SimpleNamespace(hostname=node))
    assert fnmatch.fnmatchcase(HEARTBEAT_KEY.format(name=process_name), pattern), (process_name, pattern)
    # ... and not the workers of another container.
    other = build_parser().parse_args(container_argv(compose, service, "host2")[1:]).hostname
    assert not fnmatch.fnmatchcase(HEARTBEAT_KEY.format(name=f"{other}:4242"), pattern)


def test_per_gpu_workers_pin_one_process_to_each_gpu_the_driver_lists(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import localstack

    # The driver's layout: one folder per GPU under /proc/driver/nvidia/gpus (no GPU here).
    for pci in ("0000:17:00.0", "0000:65:00.0", "0000:ca:00.0"):
        (tmp_path / pci).mkdir()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert localstack.visible_gpus(tmp_path) == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert localstack.visible_gpus(tmp_path) == ["0", "2"]
    assert localstack.visible_gpus(tmp_path / "no-driver") == []

    workers = localstack.per_gpu_workers(["0", "2"], ["gpu"], "gpu@host1")
    assert [env["CUDA_VISIBLE_DEVICES"] for _argv, env in workers] == ["0", "2"]
    nodes = [argv[argv.index("--hostname") + 1] for argv, _env in workers]
    assert nodes == ["gpu-gpu0@host1", "gpu-gpu2@host1"]
    assert all(argv[argv.index("--pool") + 1] == "solo" for argv, _env in workers)


def test_every_service_restarts_after_a_crash_or_a_reboot(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "minio-bucket":  # a one-shot job: again only if it failed
            assert service.get("restart") == "on-failure"
            continue
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"


def test_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    """Each secret must be set by the operator: compose stops with the message instead of starting
    with a value everyone can read in this file."""
    env = compose["x-avatar-env"]
    for name in ("JWT_SECRET_KEY", "UPLOAD_ENCRYPTION_KEY", "WEBHOOK_SECRET"):
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), f"{name}: {env[name]!r} is not required"


def test_the_api_may_listen_beyond_loopback_with_the_operators_secrets(compose: dict[str, Any]) -> None:
    from jobs.settings import check_exposure, is_loopback

    settings = Settings.from_env(environ=service_environment(compose, "api"))
    assert not is_loopback(settings.host)
    check_exposure(settings)  # raises if a development secret were left


def test_every_image_is_pinned_to_a_release(compose: dict[str, Any]) -> None:
    # A version (name:1.2.3, name:v1.2.3), MinIO's dated release tags, or a digest.
    pinned = re.compile(r"^[\w./-]+(:v?\d+\.\d+\.\d+[\w.-]*|:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z|@sha256:[0-9a-f]{64})$")
    images = [service["image"] for service in compose["services"].values() if "image" in service]
    for path in DOCKERFILES.values():
        images += [line.split()[1] for line in dockerfile_lines(path) if line.startswith("FROM ")]
    for image in images:
        assert pinned.match(image), f"{image} is not pinned to a release (name:1.2.3 or a digest)"


def test_the_build_context_leaves_out_local_state_installs_and_keys() -> None:
    from jobs.encryption import KEY_FILE_NAME

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        """As Docker reads .dockerignore: a pattern matches the path or a folder above it, from the
        context's root; ``**/`` matches any number of folders."""
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        for pattern in patterns:
            if pattern.startswith("**/"):
                tail = pattern[3:]
                if any(fnmatch.fnmatchcase("/".join(parts[i:n]), tail)
                       for n in range(1, len(parts) + 1) for i in range(n)):
                    return True
            elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
                return True
        return False

    for path in (".venv/bin/python", "node_modules/three/package.json", f"var/{KEY_FILE_NAME}",
                 "var/mongo/WiredTiger", "var/stack.json", ".env", "bench/out/front.png", ".git/HEAD"):
        assert ignored(path), f"{path} would be sent to the Docker daemon and could land in an image"
    for source in ("api/__init__.py", "models/face_landmark.onnx", "pyproject.toml"):
        assert not ignored(source), f"{source} is needed in the images"


# -- monitoring (the compose profile) ---------------------------------------------------------------

MONITORING = ROOT / "deploy" / "monitoring"
WORKER_SERVICES = ("worker-cpu", "worker-webhooks", "worker-gpu")


def mounted(compose: dict[str, Any], service: str, target: str) -> Path:
    """The repository file compose mounts at ``target`` in ``service``."""
    for volume in compose["services"][service]["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (ROOT / source).resolve()
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_the_monitoring_profile_runs_pinned_prometheus_and_grafana_on_the_repositorys_files(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], f"{name} would start without the profile"
    assert "profiles" not in services["api"]  # the service itself always starts
    command = services["prometheus"]["command"]
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    assert mounted(compose, "prometheus", config_path) == MONITORING / "prometheus.yml"
    provisioning = mounted(compose, "grafana", "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "avatar.yml").read_text())["providers"]
    assert mounted(compose, "grafana", providers[0]["options"]["path"]) == MONITORING / "grafana" / "dashboards"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_what_the_api_and_each_worker_serve(compose: dict[str, Any]) -> None:
    """The API's job reads its metrics route on its port with an admin token (the route is for
    operators); the workers' job reads every worker service on the port its settings serve, on an
    address other containers reach."""
    from api.metrics import METRICS_PATH

    jobs = {job["job_name"]: job for job in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}
    api_job, workers_job = jobs["avatar-api"], jobs["avatar-workers"]
    api_settings = Settings.from_env(environ=service_environment(compose, "api"))
    assert api_job["metrics_path"] == METRICS_PATH
    assert api_job["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": api_settings.port}]
    assert api_job["authorization"]["type"] == "Bearer"
    assert mounted(compose, "prometheus", api_job["authorization"]["credentials_file"]) == MONITORING / "api-token"
    (discovery,) = workers_job["dns_sd_configs"]
    assert sorted(discovery["names"]) == sorted(WORKER_SERVICES)
    for service in WORKER_SERVICES:
        settings = Settings.from_env(environ=service_environment(compose, service))
        assert settings.metrics_port == discovery["port"] > 0, service
        assert settings.host == "0.0.0.0", f"{service}: its metrics would listen on loopback only"
    assert workers_job.get("metrics_path", "/metrics") == "/metrics"  # prometheus_client answers any path


def test_the_token_file_stays_out_of_git_and_the_images() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines() + (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored.count("deploy/monitoring/api-token") == 2


def test_the_dashboard_queries_only_metrics_the_code_exports() -> None:
    from jobs import metrics

    exported = {metrics.QUEUE_DEPTH, metrics.QUEUE_OLDEST_AGE}
    for metric in metrics.EXPORTED:
        # The sample names prometheus_client writes for each kind.
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        exported |= {metric._name + suffix for suffix in suffixes[metric._type]}
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "avatar-service.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(avatar_[a-z_]+)\b", target["expr"])}
    assert queried and queried <= exported, sorted(queried - exported)
    # Every metric is on the dashboard somewhere.
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in queried}
    assert {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported} <= shown
