"""The one exception type the pipeline raises for bad input: data, not a crash."""
from __future__ import annotations


class PipelineError(Exception):
    """A photo (or the set of photos) cannot become an avatar.

    ``code`` is stable and machine-readable (``no_face``, ``invalid_image``, ``image_too_small``,
    ``image_too_large``, ``unsupported_format``, ...); ``message`` is what a person reads, already
    prefixed with the view when one is known ("left: no face found").
    """

    def __init__(self, code: str, message: str, view: str | None = None):
        self.code = code
        self.view = view
        self.message = f"{view}: {message}" if view else message
        super().__init__(self.message)
