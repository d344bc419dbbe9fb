"""The API's gunicorn worker class: gevent's, answering its own errors in the API's JSON envelope.

It lives outside the ``api`` package on purpose: gunicorn imports the worker class before gevent
patches the standard library, and importing ``api`` then would create the app's thread pools and
queues unpatched (a request that used one hung its whole process).

gunicorn refuses some requests before Flask sees them (a request line over its limit: 414; too many
or too large headers: 431; a malformed request line, header or chunked body: 400) and writes an
HTML page for each. A client of this API parses JSON, so this worker writes the envelope instead,
with the same status and a message that says what to change.
"""
from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

# What a client can do about each status gunicorn answers by itself.
ADVICE = {
    400: "The request is malformed HTTP ({detail}); send a well-formed request.",
    403: "The request was refused ({detail}).",
    414: "The request line is too long ({detail}); send a shorter URL.",
    417: "The Expect header is not supported ({detail}); send the request without it.",
    431: "The request's headers are too many or too large ({detail}); send fewer or shorter headers.",
    501: "The transfer coding is not supported ({detail}); send the body plainly or chunked.",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s job, as the API's error envelope."""
    message = ADVICE.get(status_int, "{detail}").format(detail=mesg or reason)
    body = json.dumps({"success": False, "error": message, "details": None}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class JsonErrorsGeventWorker(GeventWorker):
    """``gevent`` worker class whose own error answers are the JSON envelope (see the module doc)."""

    def init_process(self) -> None:
        # gunicorn's workers look the writer up in gunicorn.util at each error: replace it here, in
        # the worker process, before it serves anything.
        util.write_error = write_json_error
        super().init_process()
