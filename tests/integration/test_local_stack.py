"""`avatar up` (what `make run` starts) as a user meets it: one stack per checkout, found by every
other `avatar` command, gone with its terminal, and never leaving a process behind."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from jobs import localstack

AVATAR = str(Path(sys.executable).parent / "avatar")
# A second shell: no REDIS_URL, MONGODB_URI, keys or ports exported.
CLEAN_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


class UpProcess:
    """`avatar up` started in ``cwd`` (so its state is in ``cwd/var``), its output collected."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None):
        self.cwd = cwd
        env = {**CLEAN_ENV, "PORT": str(localstack.free_port()), "WORKER_CONCURRENCY": "1", **(env or {})}
        self.process = subprocess.Popen([AVATAR, "up"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout_s: float = 90.0) -> str:
        """The URL it prints once everything answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith("avatar service ready: "):
                return line.split()[3].rstrip("/")
        pytest.fail(f"avatar up did not become ready:\n{''.join(self.output)}")

    def pieces(self) -> list[psutil.Process]:
        """Every process it started, and theirs."""
        return psutil.Process(self.process.pid).children(recursive=True)


def gone_within(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still alive after ``timeout_s``."""
    _gone, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return alive


def avatar(*args: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([AVATAR, *args], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A working directory for one test's stacks; whatever a failed test left running is stopped."""
    started: list[psutil.Process] = []
    yield tmp_path
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if proc.info["cwd"] == str(tmp_path) and "up" in (proc.info["cmdline"] or []):
                started.append(proc)
                started.extend(proc.children(recursive=True))
        except psutil.Error:
            pass
    for proc in started:
        try:
            proc.kill()
        except psutil.Error:
            pass


def test_one_stack_per_checkout_found_by_every_other_command_and_stopped_by_a_hangup(checkout: Path) -> None:
    up = UpProcess(checkout)
    url = up.wait_ready()
    assert requests.get(f"{url}/api/avatar/health", timeout=5).json()["data"]["status"] == "healthy"
    pieces = up.pieces()
    assert len(pieces) >= 4  # Redis, the store, a worker, gunicorn (and its workers)

    # A second `make run` on the same checkout says so at once, naming the running one.
    started = time.monotonic()
    second = avatar("up", cwd=checkout, timeout_s=30)
    assert second.returncode == 1 and time.monotonic() - started < 10
    assert "already running" in second.stderr and str(up.process.pid) in second.stderr and url in second.stderr

    # Other commands from a shell with nothing exported find the stack's Redis, store and key.
    once = avatar("reconciler", "--once", cwd=checkout)
    assert once.returncode == 0, once.stderr
    assert set(json.loads(once.stdout)) == {"stale", "orphans", "resent", "failed"}
    swept = avatar("sweep", cwd=checkout)
    assert swept.returncode == 0, swept.stderr
    token = avatar("token", "--user", "ann", cwd=checkout).stdout.strip()
    mine = requests.get(f"{url}/api/avatar", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert mine.status_code == 200 and mine.json()["data"]["total"] == 0
    batch_help = avatar("batch", "--help", cwd=checkout)
    assert url in batch_help.stdout  # the batch's default server

    # Closing the terminal (SIGHUP) stops every piece, as Ctrl-C does.
    up.process.send_signal(signal.SIGHUP)
    assert up.process.wait(30) == 0
    assert not gone_within(pieces, 15)
    assert localstack.running_stack(checkout / "var") is None


def test_a_killed_stack_takes_its_pieces_with_it_and_its_record_is_cleared(checkout: Path) -> None:
    up = UpProcess(checkout)
    up.wait_ready()
    pieces = up.pieces()
    up.process.kill()  # SIGKILL: no chance to stop anything itself
    up.process.wait(10)
    # Each piece gets SIGTERM from the kernel and stops as it would on Ctrl-C (the store checkpoints
    # first: ~2 s idle, longer on a busy machine).
    alive = gone_within(pieces, 60)
    assert not alive, [p.cmdline() for p in alive]
    # The record it could not remove is recognised as stale: the next start goes ahead.
    assert (checkout / "var" / localstack.STACK_RECORD).exists()
    assert localstack.running_stack(checkout / "var") is None
    again = UpProcess(checkout)
    again.wait_ready()
    assert any("is no longer running" in line for line in again.output)
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(30) == 0


def test_a_public_host_with_development_secrets_is_refused_before_anything_starts(checkout: Path) -> None:
    up = UpProcess(checkout, {"HOST": "0.0.0.0"})
    assert up.process.wait(30) == 2
    said = "".join(up.output)
    assert "refusing to listen on 0.0.0.0" in said and "JWT_SECRET_KEY" in said and "WEBHOOK_SECRET" in said
    assert not (checkout / "var" / "redis").exists()  # nothing was started

    api = subprocess.run([AVATAR, "api", "--bind", "0.0.0.0:0"], env=CLEAN_ENV, capture_output=True, text=True,
                         timeout=30)
    assert api.returncode == 2 and "refusing to listen on 0.0.0.0" in api.stderr


def _piece(up: UpProcess, marker: str) -> psutil.Process:
    """The child of ``avatar up`` whose command line contains ``marker``."""
    for child in psutil.Process(up.process.pid).children():
        if marker in " ".join(child.cmdline()):
            return child
    pytest.fail(f"no piece of the stack runs {marker!r}: {[c.cmdline() for c in up.pieces()]}")


def _makes_an_avatar(url: str, jpeg: bytes) -> None:
    files = {view: (f"{view}.jpg", jpeg, "image/jpeg") for view in ("front", "left", "right")}
    deadline = time.monotonic() + 60
    while True:  # the pieces reconnect to a restarted Redis or store on their own schedule
        try:
            response = requests.post(f"{url}/api/avatar/generate", files=files, headers={"Prefer": "wait=30"},
                                     timeout=40)
            if response.status_code == 200:
                return
        except requests.ConnectionError:
            response = None
        if time.monotonic() > deadline:
            pytest.fail(f"no avatar after the restart: {response.text if response is not None else 'no answer'}")
        time.sleep(1)


def test_a_piece_killed_outright_is_started_again_and_the_stack_goes_on(checkout: Path,
                                                                        astronaut_jpeg: bytes) -> None:
    up = UpProcess(checkout)
    url = up.wait_ready()
    for marker in ("--hostname local-1@", "redis-server", "secantusd", "--hostname webhooks@", "gunicorn"):
        piece = _piece(up, marker)
        piece.kill()
        piece.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                restarted = _piece(up, marker) if any(marker in " ".join(c.cmdline())
                                                      for c in psutil.Process(up.process.pid).children()) else None
            except psutil.Error:
                restarted = None
            if restarted is not None and restarted.pid != piece.pid:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"{marker} was not started again:\n{''.join(up.output)}")
        assert up.process.poll() is None
        _makes_an_avatar(url, astronaut_jpeg)
    said = "".join(up.output)
    for name in ("local-1@", "redis", "the store", "webhooks@", "the API"):
        assert f"{name}" in said
    assert said.count("(killed by signal 9); starting it again in 1 s") == 5 and said.count("started again (pid") == 5
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(60) == 0
