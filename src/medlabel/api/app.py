"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from medlabel import __version__
from medlabel.api.errors import install_error_handlers
from medlabel.api.limits import BodyLimitMiddleware
from medlabel.api.routes import (
    audit,
    auth,
    health,
    items,
    jobs,
    labeling,
    projects,
    quality,
    upload_sessions,
    users,
)
from medlabel.runtime import Runtime

__all__ = ["create_app", "API_PREFIX", "ROUTERS", "iter_api_routes"]

API_PREFIX = "/api/v1"
STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"


ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    auth.router,
    users.router,
    projects.router,
    jobs.router,
    audit.router,
    items.router,
    upload_sessions.router,
    labeling.router,
    quality.router,
)


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for r in ROUTERS:
        router.include_router(r)
    return router


def iter_api_routes() -> Iterator[tuple[str, str, APIRoute]]:
    """Every API route as (method, full path, route), for access-rule checks and docs."""
    for r in ROUTERS:
        for route in r.routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods or ()):
                    yield method, API_PREFIX + route.path, route


def create_app(runtime: Runtime, *, run_worker: bool = False) -> FastAPI:
    """Build the app around a runtime. ``run_worker`` starts an in-process job worker."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_worker:
            runtime.start_worker()
        try:
            yield
        finally:
            if run_worker:
                runtime.stop_worker()

    app = FastAPI(
        title="medlabel",
        version=__version__,
        description="Annotation of medical images with multi-tier QA. All routes live under /api/v1.",
        openapi_url="/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body=runtime.settings.max_body_bytes,
        max_upload=runtime.settings.max_upload_bytes,
    )
    app.include_router(api_router())

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC_DIR / "index.html"
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    return app
