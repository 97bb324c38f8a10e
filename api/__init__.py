"""tokenq's HTTP API: the FastAPI app (app.py), the one way in (service.py), and one folder per
API it speaks (native/, openai/, dify/, chatchat/, ws_chat/). docs/architecture.md has the map."""

from api.app import create_app

__all__ = ["create_app"]
