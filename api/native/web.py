"""The browser page: static files of web/ served at `/` and `/web/` (no build step; see
docs/web.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from jobs.settings import ROOT

WEB_DIR = ROOT / "web"
#: Browsers revalidate the page's files on each load (a 304 when unchanged), so a page and the
#: modules it imports never come from two versions of tokenq.
CACHE_CONTROL = "no-cache"

router = APIRouter(tags=["web"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": CACHE_CONTROL})


class RevalidatedStaticFiles(StaticFiles):
    """StaticFiles whose answers say `Cache-Control: no-cache` (their ETag makes that cheap)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response


#: The page's scripts and styles, under /web/ (mounted by app.create_app).
static_files = RevalidatedStaticFiles(directory=WEB_DIR, check_dir=False)
