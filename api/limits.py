"""Rate limits per client IP (flask-limiter, counted in the service's Redis).

``RATE_LIMIT_GENERATE`` (10 per 15 minutes) applies to POST /generate on top of
``RATE_LIMIT_DEFAULT`` (100 per 15 minutes), which applies to every route but health. Every attempt
counts, refused ones included: validating a hostile upload costs us too. A breach is a 429 envelope
whose message says when to come back, with ``Retry-After`` in seconds.

The client IP is the socket's peer address. Behind reverse proxies set ``TRUSTED_PROXIES`` to how
many there are: Werkzeug's ``ProxyFix(x_for=N)`` then takes the address the outermost trusted proxy
saw, i.e. the N-th ``X-Forwarded-For`` entry from the right. Anything a client writes into
``X-Forwarded-For`` itself is ignored (with 0 proxies) or sits to the left of what the proxies
append, so it cannot move a client into another bucket.

Every limited response says where its client stands, so it can pace itself instead of running
into the 429 (the IETF RateLimit header fields draft): ``RateLimit-Limit`` (requests allowed per
window), ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds until the window ends) and
``RateLimit-Policy`` (``10;w=900``), for the limit closest to running out (on generate, usually the
generation limit). They come from flask-limiter's view of the request's limits; its own header
option is not used because it also sets ``Retry-After`` on every response, which would tell a
client answered 503 to wait for the rate-limit window instead.

If Redis cannot be reached the limits are not enforced (fail open, logged): the generate endpoint
needs Redis for its queue anyway, and reads should not go down with the limiter.
"""
from __future__ import annotations

import math
import time

from flask import Flask, Response
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from jobs.settings import Settings

GENERATIONS = "avatar generations"
EXTENSION_KEY = "avatar_limiter"


def init_limits(app: Flask, settings: Settings) -> Limiter:
    """Trust ``settings.trusted_proxies`` proxies, and limit the app's routes (blueprints registered)."""
    if settings.trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=settings.broker_url,
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        default_limits=[settings.rate_limit_default],
        strategy="fixed-window",
        key_prefix="avatar-limits",
        swallow_errors=True,
    )
    # Decorating after registration: the wrapper keeps the view's name, which is how the limiter
    # finds a route's own limits.
    app.view_functions["avatars.generate"] = limiter.limit(
        settings.rate_limit_generate, override_defaults=False, error_message=GENERATIONS,
    )(app.view_functions["avatars.generate"])
    limiter.exempt(app.view_functions["health.health"])
    app.extensions[EXTENSION_KEY] = limiter

    @app.after_request
    def add_rate_limit_headers(response: Response) -> Response:
        # The limit with the fewest requests left (a breached one has none).
        current = min(limiter.current_limits, key=lambda limit: (not limit.breached, limit.remaining),
                      default=None)
        if current is not None:
            item = current.limit
            response.headers.update({
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": str(max(0, current.remaining)),
                "RateLimit-Reset": str(_seconds_until(current.reset_at, item.get_expiry())),
                "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}",
            })
        return response

    return limiter


def breach_message(exc: RateLimitExceeded, limiter: Limiter | None) -> tuple[str, int]:
    """The 429 message and the seconds until the window resets."""
    item = exc.limit.limit
    what = GENERATIONS if exc.description == GENERATIONS else "requests"
    window = f"{item.multiples} {item.GRANULARITY.name}{'s' if item.multiples != 1 else ''}"
    reset_at = None
    if limiter is not None and limiter.current_limit is not None:
        reset_at = limiter.current_limit.reset_at
    window_s = item.get_expiry()
    retry_after = max(1, _seconds_until(reset_at, window_s)) if reset_at else window_s
    return (f"Too many requests: at most {item.amount} {what} per {window} from one client. "
            f"Try again in {_human_seconds(retry_after)} (Retry-After: {retry_after}).", retry_after)


def _seconds_until(reset_at: float, window_s: int) -> int:
    """Whole seconds until a window ends; the store rounds its end up to whole seconds, so never
    more than one window."""
    return min(window_s, max(0, math.ceil(reset_at - time.time())))


def _human_seconds(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    if not minutes:
        return f"{secs} s"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"
