"""The OpenAPI 3.1 description of the service, served at ``GET /api/openapi.json`` (the reference
page at ``/docs`` renders it).

Built from the code where the code knows the answer, written here where it does not:

- the paths and methods come from the app's URL map: every route needs an entry in ``OPERATIONS``
  and every entry a route, or the document is not built (``DocumentDrift``);
- the upload form's fields come from ``pipeline.VIEWS`` and ``api.uploads.OPTIONAL_FIELDS``: a new
  form option needs its schema in ``FORM_FIELDS``; the ``textureSize`` choices and the size limits
  come from the code and the settings;
- statuses any route of a kind can answer are added by rule: 500 everywhere (the one error handler),
  429 where the rate limiter applies, 503 where Redis or the store is used, 401 where a token is read;
- each operation's own statuses, the bodies and the headers are written out below. The bodies are
  strict (every field required unless marked optional, no other field allowed), so that
  ``tests/integration/test_openapi_drift.py``, which produces every documented status of every
  operation against the running service and checks each answer against this document, fails when
  a field or status exists on one side only.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from api.avatars import MAX_PAGE
from api.uploads import OPTIONAL_FIELDS
from jobs.settings import Settings
from jobs.store import JobStatus
from pipeline import MESH_KINDS, VIEWS
from pipeline.texture import TEXTURE_SIZES

bp = Blueprint("openapi", __name__)

DOCUMENT_KEY = "avatar_openapi"
OPENAPI_VERSION = "3.1.0"


class DocumentDrift(RuntimeError):
    """The routes or form fields of the code and the document's entries disagree."""


@bp.get("/api/openapi.json")
def openapi_document() -> Response:
    """The document, built once per app from its routes and settings."""
    document = current_app.extensions.get(DOCUMENT_KEY)
    if document is None:
        document = current_app.extensions[DOCUMENT_KEY] = build_document(current_app)
    return jsonify(document)


# -- small builders --------------------------------------------------------------------------------

def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], optional: tuple[str, ...] = (), description: str | None = None) -> dict[str, Any]:
    """A strict object: every property required but ``optional``, nothing else allowed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": [name for name in properties if name not in optional],
                              "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def map_of(values: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values, "description": description}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time", "description": "UTC, milliseconds: 2023-12-01T10:30:00.000Z"}
AVATAR_ID = {"type": "string", "format": "uuid", "description": "The avatar's id (a random UUID4)."}
STATUS = {"type": "string", "enum": [status.value for status in JobStatus]}
URL_PATH = {"type": "string", "description": "A path on this service."}


def _schemas() -> dict[str, Any]:
    features_flags = map_of(BOOLEAN, "Detected (true) or not, by name.")
    return {
        "Error": obj({
            "success": {"const": False},
            "error": {"type": "string", "description": "What went wrong, in words a person can act on."},
            "details": {"description": "More about the error: per photo verdicts (``FileVerdict``) for "
                        "refused uploads, the job's id, status and error code for a job that cannot be "
                        "served, the field at fault; null when there is nothing more. Always present.",
                        "anyOf": [{"type": "null"}, STRING, {"type": "array", "items": ref("FileVerdict")},
                                  {"type": "object"}]},
        }, description="Every error: 4xx and 5xx alike."),
        "FileVerdict": obj({
            "filename": nullable(STRING), "valid": BOOLEAN, "error": nullable(STRING),
        }, description="One form part's verdict, in the order front, left, right, then any other parts."),
        "Accepted": obj({
            "avatarId": AVATAR_ID, "status": STATUS, "statusUrl": URL_PATH, "downloadUrl": URL_PATH,
        }, description="A job was created (or, for a repeated Idempotency-Key, found): where to follow it."),
        "Completed": obj({
            "avatarId": AVATAR_ID, "status": {"const": "completed"},
            "generationTime": nullable(INTEGER), "inferenceTime": nullable(INTEGER),
            "facialFeatures": ref("FacialFeatures"), "meshInfo": ref("MeshInfo"), "glbInfo": ref("GlbInfo"),
            "downloadUrl": URL_PATH,
            "warnings": {"type": "array", "items": STRING,
                         "description": "Views left out or used differently, with the reason."},
        }, description="The finished avatar (generate with ``Prefer: wait``), in the original contract's shape."),
        "JobStatus": obj({
            "avatarId": AVATAR_ID, "status": STATUS,
            "stage": {**STATUS, "description": "The last stage entered: for a failed job, where it stopped."},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "timings": map_of(NUMBER, "Milliseconds by step: the pipeline's steps (decode, detect, "
                              "landmarks, texture, glb, ...), each stage's load/save/whole time, the queue "
                              "waits (queueWait, inferenceQueueWait, exportQueueWait) and total."),
            "createdAt": TIME, "updatedAt": TIME, "finishedAt": nullable(TIME),
            "error": nullable(ref("JobError")), "statusUrl": URL_PATH, "downloadUrl": URL_PATH,
        }, optional=("downloadUrl",), description="Where a job is. ``downloadUrl`` once it is completed."),
        "JobError": obj({
            "code": {"type": "string", "description": "Stable code: no_face, invalid_image, timeout, "
                     "internal_error, stalled, queue_unavailable, storage_unavailable, ..."},
            "message": STRING,
            "view": nullable({"type": "string", "enum": list(VIEWS)}),
        }, optional=("view",)),
        "Info": obj({
            "id": AVATAR_ID, "method": STRING, "status": STATUS,
            "downloadCount": {"type": "integer", "minimum": 0}, "createdAt": TIME,
            "metadata": obj({
                "generationTime": nullable(INTEGER), "inferenceTime": nullable(INTEGER),
                "modelVersion": nullable(STRING), "glbSize": nullable(INTEGER), "filename": nullable(STRING),
            }),
            "facialFeatures": nullable(ref("FacialFeatures")), "meshInfo": nullable(ref("MeshInfo")),
            "error": ref("JobError"),
        }, optional=("error",), description="The original contract's info body; ``error`` for a failed job."),
        "AvatarList": obj({
            "avatars": {"type": "array", "items": ref("AvatarListItem")},
            "page": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 0},
        }),
        "AvatarListItem": obj({
            "avatarId": AVATAR_ID, "status": STATUS, "createdAt": TIME, "statusUrl": URL_PATH,
            "downloadUrl": nullable(URL_PATH),
        }),
        "Deleted": obj({"avatarId": AVATAR_ID, "deleted": {"const": True}}),
        "FacialFeatures": obj({
            "expressions": features_flags,
            "faceShape": STRING,
            "skinTone": obj({"r": INTEGER, "g": INTEGER, "b": INTEGER, "confidence": NUMBER,
                             "reason": STRING}, optional=("reason",)),
            "accessories": features_flags,
            "scores": map_of(NUMBER, "Each feature's score, 0-1."),
            "confidence": map_of(NUMBER, "How sure each call is, 0-1."),
            "uncertain": {"type": "array", "items": STRING, "description": "Features too near their "
                          "decision line to call."},
        }),
        "MeshInfo": obj({
            "type": {"type": "string", "enum": list(MESH_KINDS)},
            "vertexCount": INTEGER, "faceCount": INTEGER,
            "morphTargets": {"type": "integer", "description": "Blend shapes in the GLB."},
            "textureSize": {"type": "integer", "description": "The texture's side in texels."},
            "units": {"const": "metres"},
            "parts": map_of(INTEGER, "head: triangles of skin, eyes, teeth, tongue."),
            "expression": map_of(NUMBER, "head: the default weight of each blend shape the photo's "
                                 "expression sets (the rest shape is neutral)."),
            "landmarkRmsMm": {"type": "number", "description": "head: how far the fitted head is from "
                              "the photo's landmarks, root mean square, in mm."},
        }, optional=("parts", "expression", "landmarkRmsMm"), description="What the GLB holds; the head's "
            "fit (parts, expression, landmarkRmsMm) for mesh=head."),
        "GlbInfo": obj({"size": nullable(INTEGER), "filename": nullable(STRING)}),
        "Health": obj({
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "timestamp": TIME,
            "warnings": {"type": "array", "items": STRING},
            "model": {"type": "object", "description": "The landmark model as a gpu worker reports it."},
            "workers": {"type": "object", "description": "Worker processes seen, and queues without one."},
            "queues": map_of({"type": "object"}, "Per queue: depth, processes, hosts, oldest wait."),
            "reconciler": {"type": ["object", "null"], "description": "Its last pass, and the running "
                           "jobs no message or worker holds (what it will send again); null while unknown."},
            "redis": {"type": "object"}, "mongodb": {"type": "object"},
            "memory": {"type": "object"}, "disk": {"type": "object"},
        }, optional=("warnings", "model", "workers", "queues", "reconciler", "redis", "mongodb", "memory", "disk"),
            description="``status`` and ``timestamp`` for anyone; the rest for callers on this machine "
                        "or with an admin token."),
    }


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return obj({"success": {"const": True}, "data": data})


def _headers() -> dict[str, Any]:
    def header(description: str, schema: dict[str, Any] = STRING) -> dict[str, Any]:
        return {"description": description, "schema": schema}

    return {
        "X-Request-Id": header("This request's id: support and the logs know the request by it."),
        "Retry-After": header("Seconds to wait before trying again.", INTEGER),
        "Location": header("Where to poll the job's status."),
        "RateLimit-Limit": header("Requests allowed in the window of the limit closest to running out.", INTEGER),
        "RateLimit-Remaining": header("Requests left in that window.", INTEGER),
        "RateLimit-Reset": header("Seconds until that window ends.", INTEGER),
        "RateLimit-Policy": header("The limit: ``10;w=900`` is 10 per 900 s."),
        "Preference-Applied": header("``wait=N``: the ``Prefer: wait`` that was honoured."),
        "Idempotent-Replayed": header("``true``: the answer of an earlier request with this Idempotency-Key."),
        "Server-Timing": header("The request's steps and their milliseconds."),
        "WWW-Authenticate": header("``Bearer realm=\"avatar\"``."),
        "ETag": header("The file's strong entity tag."),
        "Content-Range": header("``bytes first-last/size`` (206), or ``bytes */size`` (416)."),
        "Accept-Ranges": header("``bytes``."),
        "Content-Disposition": header("``attachment; filename=\"avatar_<id>_<timestamp>.glb\"``."),
        "Cache-Control": header("``no-cache, private``: revalidate with the ETag."),
    }


def _use(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Response headers by name, written out (a reference could not say which are required)."""
    headers = _headers()
    return {name: {**headers[name], **({"required": True} if name in required else {})} for name in names}


RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")


def ok(data_schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": headers or {},
            "content": {"application/json": {"schema": envelope(data_schema)}}}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": headers or {},
            "content": {"application/json": {"schema": ref("Error")}}}


# -- parameters ------------------------------------------------------------------------------------

def _parameters(settings: Settings) -> dict[str, Any]:
    return {
        "AvatarId": {"name": "avatar_id", "in": "path", "required": True, "schema": AVATAR_ID},
        "Prefer": {"name": "Prefer", "in": "header", "required": False,
                   "description": f"``wait=N`` (RFC 7240): wait up to N s (at most {settings.max_wait_s}) for "
                                  "the job to end before answering.",
                   "schema": {"type": "string", "pattern": r"^wait=[0-9]{1,2}$"}, "example": "wait=30"},
        "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": False,
                           "description": "A unique value per submission (a UUID): a retry with the same key "
                                          "and request gets the same job, never a second one.",
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}},
        "Range": {"name": "Range", "in": "header", "required": False, "schema": STRING,
                  "description": "``bytes=first-last``: part of the file (206), resuming a download."},
        "IfNoneMatch": {"name": "If-None-Match", "in": "header", "required": False, "schema": STRING,
                        "description": "The ETag of a copy the client has: 304 if it is still current."},
        "IfRange": {"name": "If-Range", "in": "header", "required": False, "schema": STRING,
                    "description": "Honour Range only if the file still has this ETag (else the whole file)."},
        "Page": {"name": "page", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "description": "Page number, from 1."},
        "Limit": {"name": "limit", "in": "query", "required": False,
                  "schema": {"type": "integer", "minimum": 1, "maximum": settings.max_page_size},
                  "description": f"Avatars per page (default {settings.default_page_size})."},
    }


def param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


# The plain form fields beside the photos, by name (api.uploads.OPTIONAL_FIELDS lists those the
# endpoint accepts; each must be described here).
FORM_FIELDS: dict[str, dict[str, Any]] = {
    "callbackUrl": {"type": "string", "format": "uri", "maxLength": 2048,
                    "description": "A public http(s) URL that gets a signed POST (``X-Avatar-Signature``) "
                                   "when the avatar is done or failed."},
    "mesh": {"type": "string", "enum": list(MESH_KINDS),
             "description": f"What the GLB holds: {MESH_KINDS[0]!r} (the default, the whole head with 52 ARKit "
                            "blend shapes) or 'face' (the 468-vertex face mask)."},
    "textureSize": {"type": "string", "enum": ["auto", *(str(size) for size in TEXTURE_SIZES)],
                    "description": "The texture's side in texels; auto (the default) follows the detail the "
                                   "front photo has."},
}


def _upload_form(settings: Settings) -> dict[str, Any]:
    missing = sorted(set(OPTIONAL_FIELDS) - set(FORM_FIELDS))
    extra = sorted(set(FORM_FIELDS) - set(OPTIONAL_FIELDS))
    if missing or extra:
        raise DocumentDrift(f"form fields accepted but not described: {missing}; described but not accepted: {extra}")
    mb = settings.max_image_bytes // (1024 * 1024)
    photo = {"type": "string", "format": "binary",
             "description": f"A JPEG, PNG or WebP photo (by content), {settings.min_image_side}-"
                            f"{settings.max_image_side} px on each side, at most {mb} MB."}
    views = {"front": "facing the camera", "left": "the left profile", "right": "the right profile"}
    properties = {view: {**photo, "description": f"The face {views[view]}. " + photo["description"]}
                  for view in VIEWS}
    properties.update({name: FORM_FIELDS[name] for name in sorted(OPTIONAL_FIELDS)})
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": properties, "required": list(VIEWS),
                   "additionalProperties": False},
        "encoding": {view: {"contentType": "image/jpeg, image/png, image/webp"} for view in VIEWS},
    }}}


# -- the operations, by Flask endpoint and method ----------------------------------------------------

STATUS_LINK = {"operationId": "getJobStatus", "parameters": {"avatar_id": "$response.body#/data/avatarId"}}
INFO_LINK = {"operationId": "getAvatarInfo", "parameters": {"avatar_id": "$response.body#/data/avatarId"}}
DOWNLOAD_LINK = {"operationId": "downloadAvatar", "parameters": {"avatar_id": "$response.body#/data/avatarId"}}


def _operations(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    limited = _use(*RATE_HEADERS)
    glb_headers = _use("ETag", "Accept-Ranges", "Content-Disposition", "Cache-Control", required=("ETag",))
    download_responses = {
        "200": {"description": "The GLB (``model/gltf-binary``); a running job is waited for first "
                               f"(up to DOWNLOAD_WAIT_S, {settings.download_wait_s:g} s here).",
                "headers": {**glb_headers, **limited},
                "content": {"model/gltf-binary": {"schema": {"type": "string", "format": "binary"}}}},
        "206": {"description": "The requested range of the GLB.",
                "headers": {**glb_headers, **_use("Content-Range", required=("Content-Range",)), **limited},
                "content": {"model/gltf-binary": {"schema": {"type": "string", "format": "binary"}}}},
        "304": {"description": "The client's copy (If-None-Match) is current.", "headers": _use("ETag")},
        "409": error("The job has not ended within the wait; poll its statusUrl."),
        "410": error("The avatar was canceled, or its file is no longer stored."),
        "416": error("The range is outside the file.", _use("Content-Range", required=("Content-Range",))),
        "422": error("The job failed: nothing to download (details has its error code)."),
        "403": error("The avatar belongs to another user."),
        "404": error("No such avatar (or not an avatar id)."),
    }
    if settings.download_presign_s > 0:
        download_responses["302"] = {
            "description": "With object storage and DOWNLOAD_PRESIGN_S: ``Location`` is a presigned URL "
                           f"of the GLB, valid {settings.download_presign_s} s; counted as a download. A "
                           "page script's fetch() (Sec-Fetch-Mode other than navigate) gets the 200 instead.",
            "headers": {"Location": {"description": "The presigned URL.", "required": True,
                                     "schema": {"type": "string", "format": "uri"}}}}
    return {
        ("avatars.generate", "post"): {
            "operationId": "generateAvatar", "tags": ["avatars"],
            "summary": "Submit three photos; get the job (202), or with Prefer: wait the finished avatar (200).",
            "parameters": [param("Prefer"), param("IdempotencyKey")],
            "requestBody": _upload_form(settings),
            "responses": {
                "200": {**ok(ref("Completed"), "Finished within ``Prefer: wait``.",
                             _use("Preference-Applied", "Idempotent-Replayed", "Server-Timing", *RATE_HEADERS)),
                        "links": {"status": STATUS_LINK, "info": INFO_LINK, "download": DOWNLOAD_LINK}},
                "202": {**ok(ref("Accepted"), "Queued (or still running after ``Prefer: wait``).",
                             _use("Location", "Preference-Applied", "Idempotent-Replayed", "Server-Timing",
                                  *RATE_HEADERS, required=("Location",))),
                        "links": {"status": STATUS_LINK, "info": INFO_LINK, "download": DOWNLOAD_LINK}},
                "400": error("A refused photo (``details`` has a verdict per part), a bad option, a "
                             "malformed form, body or Idempotency-Key."),
                "404": error("A repeated Idempotency-Key names an avatar that has been deleted."),
                "409": error("A request with this Idempotency-Key is still being processed.", _use("Retry-After")),
                "410": error("Under ``Prefer: wait``: the job was canceled."),
                "413": error("The body is larger than three photos can be."),
                "415": error("The body is not multipart/form-data."),
                "422": error("Under ``Prefer: wait``: the job failed (``details`` has its code); or the "
                             "Idempotency-Key was used for a different request."),
            },
        },
        ("jobs.job_status", "get"): {
            "operationId": "getJobStatus", "tags": ["jobs"],
            "summary": "Where the job is; Prefer: wait=N makes it a long poll.",
            "parameters": [param("AvatarId"), param("Prefer")],
            "responses": {
                "200": {**ok(ref("JobStatus"), "The job.", _use("Preference-Applied", *RATE_HEADERS)),
                        "links": {"info": INFO_LINK, "download": DOWNLOAD_LINK}},
                "403": error("The avatar belongs to another user."),
                "404": error("No such avatar (or not an avatar id)."),
            },
        },
        ("jobs.cancel", "post"): {
            "operationId": "cancelJob", "tags": ["jobs"], "summary": "Stop a queued or running job.",
            "parameters": [param("AvatarId")],
            "responses": {
                "200": ok(ref("JobStatus"), "Canceled; its photos are deleted.", _use(*RATE_HEADERS)),
                "403": error("The avatar belongs to another user."),
                "404": error("No such avatar (or not an avatar id)."),
                "409": error("The job has already ended."),
            },
        },
        ("avatars.info", "get"): {
            "operationId": "getAvatarInfo", "tags": ["avatars"], "summary": "The avatar's record.",
            "parameters": [param("AvatarId")],
            "responses": {
                "200": {**ok(ref("Info"), "The avatar.", _use(*RATE_HEADERS)),
                        "links": {"download": DOWNLOAD_LINK}},
                "403": error("The avatar belongs to another user."),
                "404": error("No such avatar (or not an avatar id)."),
            },
        },
        ("avatars.download", "get"): {
            "operationId": "downloadAvatar", "tags": ["avatars"],
            "summary": "The GLB; waits for a running job; ETag/304, Range/206.",
            "parameters": [param("AvatarId"), param("Range"), param("IfNoneMatch"), param("IfRange")],
            "responses": download_responses,
        },
        ("avatars.download", "head"): {
            "operationId": "downloadAvatarHead", "tags": ["avatars"],
            "summary": "The GLB's headers without its body (not counted as a download).",
            "parameters": [param("AvatarId"), param("Range"), param("IfNoneMatch"), param("IfRange")],
            "responses": {status: {key: value for key, value in response.items() if key != "content"}
                          for status, response in download_responses.items()},
        },
        ("avatars.delete", "delete"): {
            "operationId": "deleteAvatar", "tags": ["avatars"],
            "summary": "Cancel if running, then delete the record and every file.",
            "parameters": [param("AvatarId")],
            "responses": {
                "200": ok(ref("Deleted"), "Deleted.", _use(*RATE_HEADERS)),
                "403": error("The avatar belongs to another user."),
                "404": error("No such avatar."),
            },
        },
        ("avatars.list_avatars", "get"): {
            "operationId": "listAvatars", "tags": ["avatars"], "summary": "The caller's avatars, newest first.",
            "parameters": [param("Page"), param("Limit")],
            "security": [{"bearerAuth": []}],
            "responses": {
                "200": ok(ref("AvatarList"), "One page.", _use(*RATE_HEADERS)),
                "400": error("page or limit is not a whole number in range."),
            },
        },
        ("health.health", "get"): {
            "operationId": "getHealth", "tags": ["operations"],
            "summary": "Can the service generate avatars now; details for this machine and admin tokens.",
            "responses": {
                "200": ok(ref("Health"), "Redis and the store answer (``degraded``: a queue has no worker)."),
            },
        },
        ("metrics.scrape", "get"): {
            "operationId": "getMetrics", "tags": ["operations"],
            "summary": "Prometheus metrics of the API's processes and the job queues (this machine and admin tokens).",
            "responses": {
                "200": {"description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": STRING}}},
                "403": error("Not on this machine and no admin token."),
            },
        },
        ("openapi.openapi_document", "get"): {
            "operationId": "getOpenApiDocument", "tags": ["operations"], "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        },
        ("web.index", "get"): {
            "operationId": "getWebPage", "tags": ["web page"], "summary": "The web page: upload, follow, view.",
            "responses": {"200": {"description": "HTML.", "content": {"text/html": {"schema": STRING}}}},
        },
        ("web.docs", "get"): {
            "operationId": "getApiReference", "tags": ["web page"], "summary": "This document as a page.",
            "responses": {"200": {"description": "HTML.", "content": {"text/html": {"schema": STRING}}}},
        },
        ("web.static", "get"): {
            "operationId": "getWebAsset", "tags": ["web page"], "summary": "The pages' scripts, styles and images.",
            "parameters": [{"name": "filename", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": {"description": "The file.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "404": error("No such file."),
            },
        },
    }


# Statuses added by rule (see the module's docstring), by what an endpoint does.
RATE_LIMIT_EXEMPT = frozenset({"health.health", "metrics.scrape", "openapi.openapi_document",
                               "web.index", "web.docs", "web.static"})
WITHOUT_STORE = frozenset({"metrics.scrape", "openapi.openapi_document", "web.index", "web.docs", "web.static"})
# Reads the caller's token: an invalid one is 401 (health and metrics only check it away from
# loopback, for the details).
READS_TOKEN = frozenset({"avatars.generate", "avatars.info", "avatars.download", "avatars.delete",
                         "avatars.list_avatars", "jobs.job_status", "jobs.cancel", "health.health", "metrics.scrape"})
READS_UPLOAD = frozenset({"avatars.generate"})


def _by_rule(endpoint: str, responses: dict[str, Any], settings: Settings) -> None:
    responses["500"] = error("A bug on our side; the message says what to tell the operator.")
    if endpoint in READS_TOKEN:
        responses["401"] = error("The Authorization header is not a valid Bearer token (or one is required).",
                                 _use("WWW-Authenticate"))
    if endpoint not in RATE_LIMIT_EXEMPT:
        responses["429"] = error("Too many requests from this client in the window.",
                                 _use("Retry-After", *RATE_HEADERS, required=("Retry-After",)))
    if endpoint not in WITHOUT_STORE:
        responses["503"] = error("Redis or the job store cannot be reached, or (generate) the photos "
                                 "cannot be stored, disk space is low or the backlog is full: retry later.",
                                 _use("Retry-After"))
    if endpoint in READS_UPLOAD:
        responses["408"] = error(f"The upload took longer than UPLOAD_TIMEOUT_S "
                                 f"({settings.upload_timeout_s:g} s here).")
    for response in responses.values():
        response.setdefault("headers", {}).update(_use("X-Request-Id"))


# -- the document ------------------------------------------------------------------------------------

AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})
DOCUMENTED_AUTOMATIC = frozenset({("avatars.download", "head")})


def openapi_path(rule: str) -> str:
    """``/api/avatar/jobs/<avatar_id>`` → ``/api/avatar/jobs/{avatar_id}`` (converters dropped)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def routes(app: Flask) -> set[tuple[str, str, str]]:
    """(endpoint, method, path) of every route the app serves, HEAD and OPTIONS only where they
    are more than Flask's automatic answers."""
    found = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method in AUTOMATIC_METHODS and (rule.endpoint, method.lower()) not in DOCUMENTED_AUTOMATIC:
                continue
            found.add((rule.endpoint, method.lower(), openapi_path(rule.rule)))
    return found


def build_document(app: Flask) -> dict[str, Any]:
    settings: Settings = app.extensions["avatar"].settings
    operations = _operations(settings)
    served = routes(app)
    undocumented = sorted((e, m) for e, m, _ in served if (e, m) not in operations)
    unserved = sorted(set(operations) - {(e, m) for e, m, _ in served})
    if undocumented or unserved:
        raise DocumentDrift(f"routes without an operation: {undocumented}; operations without a route: {unserved}")
    paths: dict[str, dict[str, Any]] = {}
    for endpoint, method, path in sorted(served):
        operation = {**operations[(endpoint, method)]}
        operation["responses"] = {**operation["responses"]}
        _by_rule(endpoint, operation["responses"], settings)
        operation["responses"] = dict(sorted(operation["responses"].items()))
        operation.setdefault("security", [{}, {"bearerAuth": []}] if endpoint in READS_TOKEN else [])
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Avatar service",
            "version": _version(),
            "summary": "Three face photos in, a textured 3D head (GLB) out.",
            "description": "Every JSON answer is an envelope: ``{success: true, data}`` or "
                           "``{success: false, error, details}`` (``details`` always present, null when "
                           "there is nothing more). Rate limits per client IP: "
                           f"{settings.rate_limit_generate} generations and {settings.rate_limit_default} "
                           "requests; each limited answer carries RateLimit-* headers.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "avatars"}, {"name": "jobs"}, {"name": "operations"}, {"name": "web page"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(settings),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "Optional unless REQUIRE_AUTH is on: an avatar made with a token is its "
                               "user's alone. Minted by ``avatar token --user ID`` (``--admin`` also sees "
                               "health details and the metrics)."}},
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("avatar-service")
    except PackageNotFoundError:
        return "0"
