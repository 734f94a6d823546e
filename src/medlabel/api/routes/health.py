from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import text

from medlabel import __version__
from medlabel.api.deps import RuntimeDep, public
from medlabel.api.schemas import HealthRead

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthRead, dependencies=[Depends(public)])
def health(rt: RuntimeDep) -> HealthRead:
    """Liveness and version; also checks the database answers."""
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = "ok"
    except Exception as exc:  # noqa: BLE001
        db = f"error: {type(exc).__name__}"
    return HealthRead(status="ok" if db == "ok" else "degraded", version=__version__, database=db)
