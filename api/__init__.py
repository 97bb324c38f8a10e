"""tokenq's HTTP API: FastAPI app, routes, auth, error mapping, SSE/WebSocket streaming."""

from api.app import create_app

__all__ = ["create_app"]
