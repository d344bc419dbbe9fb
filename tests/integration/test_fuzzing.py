"""Schemathesis against the running service, from its own OpenAPI document: every operation, then
stateful sequences along the document's links (generate → status → info → download), with real
photos in half of the uploads (tests/integration/schemathesis_hooks.py). Every answer must be
documented (status, media type, headers, body schema), none may be a 5xx, a deleted avatar must
be gone and a created one reachable. The run's figures go to bench/out/schemathesis.txt.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from service_stack import LocalStack

from api.auth import mint_token

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMMARY = REPO_ROOT / "bench" / "out" / "schemathesis.txt"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "use_after_free",
          "ensure_resource_availability")
# Per operation; with the stateful phase this keeps the run near 30 s on two cores.
MAX_EXAMPLES = 15
SEED = 20241


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(stack: LocalStack, astronaut_jpeg: bytes,
                                                                       tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "SCHEMATHESIS_PHOTO": str(photo),
           "SCHEMATHESIS_TOKEN": mint_token(stack.settings, "fuzzer", timedelta(hours=1))}
    argv = [sys.executable, "-m", "schemathesis.cli", "run", stack.url("/api/openapi.json"),
            "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "2",
            "--request-timeout", "70", "--no-color", "--generation-database", "none",
            "--suppress-health-check", "all"]
    api_log = stack.logs / "api.log"
    already = len(api_log.read_text(errors="replace").splitlines())
    run = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    answers = Counter(f"{entry['method']} {entry['route']} {entry['status']}"
                      for entry in _access_lines(api_log, already))
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(output + "\nAnswers the API gave (method, route, status: count):\n"
                       + "".join(f"  {key}: {count}\n" for key, count in sorted(answers.items())))
    assert run.returncode == 0, output[-6000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", output).groups())
    assert generated == passed > 0, output[-3000:]
    assert not [key for key in answers if key.endswith(tuple(f" {code}" for code in range(500, 600)))], answers
    # Real photos reached the workers, and the links followed their jobs to the end: some
    # downloads sent the GLB.
    assert answers["POST /api/avatar/generate 202"] + answers["POST /api/avatar/generate 200"] > 0, answers
    assert answers["GET /api/avatar/download/<avatar_id> 200"] > 0, answers
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links and int(links.group(1)) > 0, output[-3000:]


def _access_lines(path: Path, skip: int) -> list[dict]:
    """The API's JSON access lines written after the first ``skip`` lines (LOG_FORMAT=json)."""
    lines = path.read_text(errors="replace").splitlines()[skip:]
    return [entry for entry in map(_json_or_none, lines) if entry and entry.get("logger") == "avatar.access"]


def _json_or_none(line: str) -> dict | None:
    try:
        return json.loads(line) if line.startswith("{") else None
    except ValueError:
        return None
