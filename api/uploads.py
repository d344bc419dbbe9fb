"""The contract's upload rules, checked from the file headers before anything is stored or queued.

Three fields (front, left, right), each a JPEG, PNG or WebP by its content (not its name or declared
type), 224..4096 px on each side, at most 10 MB. Every field gets a line in ``details``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collections.abc import Mapping

from api.errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from api.multipart import FormPart
from jobs.settings import Settings
from pipeline import VIEWS, PipelineError
from pipeline.decode import ImageHeader, check_dimensions, read_header

VIEW_DESCRIPTIONS = {"front": "front-facing", "left": "left profile", "right": "right profile"}
VALIDATION_FAILED = "Image validation failed"


@dataclass(frozen=True)
class Upload:
    """One accepted photo."""

    view: str
    filename: str
    data: bytes
    header: ImageHeader

    def describe(self) -> dict[str, Any]:
        """What the job record keeps about the photo (never the pixels)."""
        return {"filename": self.filename, "size": len(self.data), "format": self.header.format,
                "width": self.header.width, "height": self.header.height}


class _Rejected(Exception):
    def __init__(self, error_class: type[ApiError], message: str):
        self.error_class = error_class
        self.message = message


def validate_uploads(parts: Mapping[str, FormPart], settings: Settings) -> dict[str, Upload]:
    """The three photos, or an ``ApiError`` whose ``details`` lists every field's verdict."""
    accepted: dict[str, Upload] = {}
    details: list[dict[str, Any]] = []
    error_classes: set[type[ApiError]] = set()
    for view in VIEWS:
        part = parts.get(view)
        # A plain text field named like a photo is not a photo.
        part = part if part is not None and part.filename is not None else None
        filename = part.filename if part else None
        try:
            upload = _validate_one(view, part, settings)
        except _Rejected as rejected:
            error_classes.add(rejected.error_class)
            details.append({"field": view, "filename": filename, "valid": False, "error": rejected.message})
            continue
        accepted[view] = upload
        details.append({"field": view, "filename": filename, "valid": True})
    if error_classes:
        # One kind of problem gets its own status (413, 415); a mix is a plain 400.
        error_class = error_classes.pop() if len(error_classes) == 1 else BadRequest
        raise error_class(VALIDATION_FAILED, details)
    return accepted


def _validate_one(view: str, part: FormPart | None, settings: Settings) -> Upload:
    if part is None:
        raise _Rejected(BadRequest, f"Missing file: '{view}' is required "
                                    f"(a {VIEW_DESCRIPTIONS[view]} face photo).")
    data = part.data
    if len(data) > settings.max_image_bytes:
        raise _Rejected(PayloadTooLarge, f"File too large. Maximum size is "
                                         f"{settings.max_image_bytes // (1024 * 1024)}MB per image.")
    if not data:
        raise _Rejected(BadRequest, "File is empty: attach the photo itself, not just its name.")
    try:
        header = read_header(data)
        check_dimensions(header, settings.min_image_side, settings.max_image_side)
    except PipelineError as exc:
        error_class = UnsupportedMediaType if exc.code == "unsupported_format" else BadRequest
        message = exc.message[0].upper() + exc.message[1:]
        if exc.code == "unsupported_format":
            message = "Unsupported file type: only JPEG, PNG and WebP images are accepted."
        raise _Rejected(error_class, message) from None
    return Upload(view, part.filename or view, data, header)
