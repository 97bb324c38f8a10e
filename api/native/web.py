"""The browser page: static files of web/ served at `/` (no build step; see web/README.md)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from jobs.settings import ROOT

WEB_DIR = ROOT / "web"

router = APIRouter(tags=["web"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


#: The page's scripts and styles, under /web/ (mounted by app.create_app).
static_files = StaticFiles(directory=WEB_DIR, check_dir=False)
