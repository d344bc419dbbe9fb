"""`avatar probe`, the Kubernetes liveness and startup probes, against the running stack."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import WORKER_NAME
from service_stack import LocalStack

from jobs import localstack


def probe(stack: LocalStack, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **stack.settings.to_env(), **env}
    return subprocess.run([sys.executable, "-m", "avatar_cli", "probe", *args], env=environ,
                          capture_output=True, text=True, timeout=30)


def test_the_worker_probe_passes_while_its_node_beats_and_fails_for_one_that_does_not(stack: LocalStack) -> None:
    alive = probe(stack, "worker", WORKER_HOSTNAME=WORKER_NAME)
    assert alive.returncode == 0, alive.stderr
    assert f"{WORKER_NAME}: 2 process(es) alive" in alive.stdout
    gone = probe(stack, "worker", "--hostname", "cpu@a-pod-that-died")
    assert gone.returncode == 1 and "no process of worker cpu@a-pod-that-died" in gone.stderr
    # Redis away is not the worker's fault: restarting it would not help.
    no_redis = probe(stack, "worker", "--timeout", "0.5", WORKER_HOSTNAME=WORKER_NAME,
                     REDIS_URL=f"redis://127.0.0.1:{localstack.free_port()}/0")
    assert no_redis.returncode == 0 and "not the worker's fault" in no_redis.stderr


def test_the_api_probe_passes_while_the_api_answers_at_all(stack: LocalStack) -> None:
    alive = probe(stack, "api")
    assert alive.returncode == 0 and alive.stdout.startswith("API answered: "), alive.stderr
    silent = probe(stack, "api", "--timeout", "1", PORT=str(localstack.free_port()))
    assert silent.returncode == 1 and "did not answer" in silent.stderr
