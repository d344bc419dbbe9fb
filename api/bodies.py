"""The JSON bodies the endpoints return, built from a job record (field names from the contract)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, jsonify

from jobs.store import Job, JobStatus


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The success envelope."""
    response = jsonify({"success": True, "data": data})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def iso(value: datetime | None) -> str | None:
    """``2023-12-01T10:30:00.000Z``, as the contract writes times."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def whole_ms(value: float | None) -> int | None:
    """Milliseconds as the contract writes them: an integer (``"generationTime": 2500``)."""
    return None if value is None else int(round(value))


def status_url(job_id: str) -> str:
    return f"/api/avatar/jobs/{job_id}"


def download_url(job_id: str) -> str:
    return f"/api/avatar/download/{job_id}"


def accepted_body(job: Job) -> dict[str, Any]:
    """202 to POST /generate: where to poll and where the GLB will be."""
    return {"avatarId": job.id, "status": job.status.value,
            "statusUrl": status_url(job.id), "downloadUrl": download_url(job.id)}


def completed_body(job: Job) -> dict[str, Any]:
    """The contract's generate response for a finished avatar."""
    result = job.result
    return {
        "avatarId": job.id,
        "status": job.status.value,
        "generationTime": whole_ms(result.get("generationTime")),
        "inferenceTime": whole_ms(result.get("inferenceTime")),
        "facialFeatures": result.get("facialFeatures"),
        "meshInfo": result.get("meshInfo"),
        "glbInfo": {"size": result.get("glbSize"), "filename": result.get("filename")},
        "downloadUrl": download_url(job.id),
        "warnings": result.get("warnings", []),
    }


def status_body(job: Job) -> dict[str, Any]:
    """GET /jobs/<id>: where the job is, how far along, what each step took, and why it failed."""
    timings = job.timings
    started = job.doc.get("startedAt")
    if started:
        timings["queueWait"] = _ms_between(job.created_at, started)
    # From one stage finishing to the next one starting: recording it, the queue, the broker hop.
    trace = job.trace
    for earlier, later in (("preprocess", "inference"), ("inference", "export")):
        if f"{earlier}Finished" in trace and f"{later}Received" in trace:
            timings[f"{later}QueueWait"] = round((trace[f"{later}Received"] - trace[f"{earlier}Finished"]) * 1000, 3)
    if job.finished_at:
        timings["total"] = _ms_between(job.created_at, job.finished_at)
    body: dict[str, Any] = {
        "avatarId": job.id,
        "status": job.status.value,
        "stage": job.stage,
        "progress": job.progress,
        "timings": timings,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "finishedAt": iso(job.finished_at),
        "error": job.error,
        "statusUrl": status_url(job.id),
    }
    if job.status is JobStatus.COMPLETED:
        body["downloadUrl"] = download_url(job.id)
    return body


def info_body(job: Job) -> dict[str, Any]:
    """The contract's info body."""
    result = job.result
    body = {
        "id": job.id,
        "method": job.doc.get("method", "image_upload"),
        "status": job.status.value,
        "downloadCount": job.download_count,
        "createdAt": iso(job.created_at),
        "metadata": {
            "generationTime": whole_ms(result.get("generationTime")),
            "inferenceTime": whole_ms(result.get("inferenceTime")),
            "modelVersion": result.get("modelVersion"),
            "glbSize": result.get("glbSize"),
            "filename": result.get("filename"),
        },
        "facialFeatures": result.get("facialFeatures"),
        "meshInfo": result.get("meshInfo"),
    }
    if job.error:
        body["error"] = job.error
    return body


def list_item(job: Job) -> dict[str, Any]:
    return {"avatarId": job.id, "status": job.status.value, "createdAt": iso(job.created_at),
            "statusUrl": status_url(job.id),
            "downloadUrl": download_url(job.id) if job.status is JobStatus.COMPLETED else None}


def _ms_between(start: datetime, end: datetime) -> float:
    if start.tzinfo is None or end.tzinfo is None:
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return round((end - start).total_seconds() * 1000, 3)
