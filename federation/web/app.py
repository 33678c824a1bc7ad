"""The status page of ``fed serve``: a small Flask application, read-only.

- ``/``: the page (Jinja2 templates in ``templates/``): sites, flows with their lag
  (lagging ones marked), (source, destination) pairs, the release completeness matrix
  (release x site) and the recent sync log. A few lines of JavaScript
  (``static/status.js``) fetch ``/live`` every ``refresh`` seconds and put it in place.
- ``/live``: the page's live part alone, rendered by the same template.
- ``/api/status``: the same JSON as ``fed status --json``.
- ``/api/log``: the recent sync log of every site on this machine (``?limit=N``).

Only GET (and HEAD) are answered. Gathering the status is shared: requests arriving
within ``max_age`` seconds of the last gathering get its result, and one gathering
runs at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

from federation.errors import FederationError
from federation.status.model import FederationStatus, ago, format_age

Gather = Callable[[], FederationStatus]


class SharedStatus:
    """The latest gathered status, gathered again once older than ``max_age`` seconds."""

    def __init__(self, gather: Gather, max_age: float) -> None:
        self.gather = gather
        self.max_age = max_age
        self._lock = threading.Lock()
        self._latest: FederationStatus | None = None
        self._at = 0.0

    def get(self) -> FederationStatus:
        with self._lock:
            if self._latest is None or time.monotonic() - self._at >= self.max_age:
                self._latest = self.gather()
                self._at = time.monotonic()
            return self._latest


def create_app(gather: Gather, *, refresh: float = 10.0) -> Flask:
    """The application; ``gather`` returns the federation's status (with its recent log)."""
    app = Flask(__name__)
    shared = SharedStatus(gather, max_age=min(1.0, refresh / 2))
    app.jinja_env.filters["age"] = format_age
    app.jinja_env.globals["ago"] = ago

    def page(template: str) -> str:
        found = shared.get()
        return render_template(template, status=found, now=time.time(), refresh=refresh)

    @app.get("/")
    def index() -> str:
        return page("index.html")

    @app.get("/live")
    def live() -> str:
        return page("live.html")

    @app.get("/api/status")
    def api_status() -> Response:
        return jsonify(shared.get().to_dict(time.time()))

    @app.get("/api/log")
    def api_log() -> Response:
        limit = request.args.get("limit", type=int)
        entries = shared.get().log_dict()
        return jsonify({"entries": entries[:limit] if limit and limit > 0 else entries})

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(FederationError)
    def cannot_gather(error: FederationError) -> tuple[Response, int]:
        # the sites or policies cannot be read any more (moved, deleted): say so, and the
        # page keeps its last view until they can
        return jsonify({"error": str(error).splitlines()[0]}), 503

    @app.errorhandler(404)
    def not_found(_error: Any) -> tuple[Response, int]:
        return jsonify({"error": "not found: this page has /, /api/status and /api/log"}), 404

    return app
