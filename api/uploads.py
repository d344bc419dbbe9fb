"""The contract's upload rules, checked from the bytes before anything is stored or queued.

Exactly three file fields (front, left, right), each once; each a JPEG, PNG or WebP by its content
(not its name or declared type), 224..4096 px on each side as its header states (so a 50000x50000
"photo" of a few KB is refused without decoding a pixel), a single frame, at most 10 MB, and whole
(a truncated file is refused here, not in the worker). An accepted photo is stored without its
metadata (see ``api.metadata``).

Every part gets a verdict in ``details``, in the contract's shape ``{filename, valid, error}``, in the
order front, left, right, then any other parts; valid files are listed too, with ``valid: true`` and
``error: null``. Any refused photo makes the whole request a 400 "Image validation failed", the
contract's status for invalid images (an unsupported type or an oversize file included).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.errors import BadRequest
from api.metadata import strip_metadata
from api.multipart import FormPart
from jobs.settings import Settings
from pipeline import VIEWS, PipelineError
from pipeline.decode import ImageHeader, check_dimensions, read_header

VIEW_DESCRIPTIONS = {"front": "front-facing", "left": "left profile", "right": "right profile"}
VALIDATION_FAILED = "Image validation failed"
UNSUPPORTED = "Unsupported file type: only JPEG, PNG and WebP images are accepted."
ANIMATED = "Animated images are not accepted: send a single still photo."
# Client file names are echoed and recorded, never used as paths; this keeps a 100 KB one in bounds.
MAX_FILENAME_CHARS = 255
# Plain (non-file) fields the endpoint also takes; each is checked where it is used.
OPTIONAL_FIELDS = frozenset({"callbackUrl", "mesh", "textureSize"})


@dataclass(frozen=True)
class Upload:
    """One accepted photo: ``data`` is what is stored (metadata and trailing bytes removed)."""

    view: str
    filename: str
    data: bytes
    header: ImageHeader
    received_bytes: int

    def describe(self) -> dict[str, Any]:
        """What the job record keeps about the photo (never the pixels)."""
        return {"filename": self.filename, "size": len(self.data), "receivedSize": self.received_bytes,
                "format": self.header.format, "width": self.header.width, "height": self.header.height,
                "orientation": self.header.orientation}


class _Rejected(Exception):
    def __init__(self, message: str):
        self.message = message


def display_filename(filename: str | None) -> str | None:
    """The client's file name as we echo and record it: at most ``MAX_FILENAME_CHARS`` characters."""
    if filename is None or len(filename) <= MAX_FILENAME_CHARS:
        return filename
    return filename[:MAX_FILENAME_CHARS - 1] + "…"


def validate_uploads(form: Mapping[str, FormPart], settings: Settings) -> dict[str, Upload]:
    """The three photos, or an ``ApiError`` whose ``details`` has a verdict for every part.

    ``form`` is ``read_form``'s ``FormData`` (its ``all`` has the duplicates) or any mapping.
    """
    parts: tuple[FormPart, ...] = getattr(form, "all", tuple(form.values()))
    accepted: dict[str, Upload] = {}
    details: list[dict[str, Any]] = []

    def verdict(filename: str | None, error: str | None) -> None:
        # Exactly the contract's three keys; the order (front, left, right, then any extra parts)
        # and the messages, which name the field where the file name cannot, tell them apart.
        details.append({"filename": display_filename(filename), "valid": error is None, "error": error})

    for view in VIEWS:
        part = next((p for p in parts if p.name == view), None)
        # A plain text field named like a photo is not a photo.
        photo = part if part is not None and part.filename is not None else None
        try:
            upload = _validate_one(view, photo, settings)
        except _Rejected as rejected:
            verdict(photo.filename if photo else None, rejected.message)
            continue
        accepted[view] = upload
        verdict(photo.filename, None)
    seen: set[str] = set()
    for part in parts:
        duplicate = part.name in seen
        seen.add(part.name)
        if part.name in VIEWS and not duplicate:
            continue  # judged above
        if part.name in OPTIONAL_FIELDS and part.filename is None and not duplicate:
            continue
        if duplicate:
            verdict(part.filename, f"Duplicate field '{display_filename(part.name)}': send it once.")
        else:
            verdict(part.filename,
                    f"Unexpected field '{display_filename(part.name)}': send only front, left and right.")
    if not all(item["valid"] for item in details):
        raise BadRequest(VALIDATION_FAILED, details)
    return accepted


def _validate_one(view: str, part: FormPart | None, settings: Settings) -> Upload:
    if part is None:
        raise _Rejected(f"Missing file: '{view}' is required "
                                    f"(a {VIEW_DESCRIPTIONS[view]} face photo).")
    if part.oversize or part.size > settings.max_image_bytes:
        raise _Rejected(f"File too large. Maximum size is "
                                         f"{settings.max_image_bytes // (1024 * 1024)}MB per image.")
    data = part.data
    if not data:
        raise _Rejected("File is empty: attach the photo itself, not just its name.")
    try:
        header = read_header(data)
        check_dimensions(header, settings.min_image_side, settings.max_image_side)
        # Implied by the side limits today; stated on its own so that raising one side limit can
        # never let through a decompression bomb (the decoder allocates width x height x 4 bytes).
        if header.width * header.height > settings.max_image_side ** 2:
            raise PipelineError("image_too_large", f"Image has too many pixels: at most "
                                                   f"{settings.max_image_side ** 2} are accepted.")
        if header.animated:
            raise _Rejected(ANIMATED)
        stored = strip_metadata(data, header)
    except PipelineError as exc:
        if exc.code == "unsupported_format":
            raise _Rejected(UNSUPPORTED) from None
        raise _Rejected(exc.message[0].upper() + exc.message[1:]) from None
    return Upload(view, display_filename(part.filename) or view, stored, header, part.size)
