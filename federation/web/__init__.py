"""``fed serve``: the federation's status as a read-only web page and JSON API."""

from federation.web.app import create_app

__all__ = ["create_app"]
