from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from medlabel.accounts import service as accounts
from medlabel.api.deps import COOKIE_NAME, ActorDep, RuntimeDep, SessionDep, client_ip, public, session_token
from medlabel.api.schemas import LoginIn, LoginOut, UserRead
from medlabel.storage.models import User

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=LoginOut, dependencies=[Depends(public)])
def login(
    body: LoginIn, request: Request, response: Response, rt: RuntimeDep, session: SessionDep
) -> LoginOut:
    """Log in: sets an HttpOnly session cookie and returns a bearer token for API clients."""
    result = accounts.login(
        session,
        rt.settings,
        body.username,
        body.password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    response.set_cookie(
        COOKIE_NAME,
        result.token,
        httponly=True,
        samesite="strict",
        secure=rt.settings.cookie_secure,
        max_age=int(rt.settings.absolute_timeout.total_seconds()),
        path="/",
    )
    user = session.get(User, result.user_id)
    return LoginOut(
        token=result.token,
        user=UserRead.model_validate(user),
        idle_expires_at=result.expires_idle_at,
        expires_at=result.expires_at,
    )


@router.post("/logout", status_code=204)
def logout(actor: ActorDep, request: Request, response: Response, session: SessionDep) -> Response:
    """End this session (the token stops working at once)."""
    token = session_token(request)
    if token:
        accounts.logout(session, token, ip=actor.ip)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/me", response_model=UserRead)
def me(actor: ActorDep, session: SessionDep) -> UserRead:
    return UserRead.model_validate(session.get(User, actor.user_id))
