from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.api.deps import SessionDep, global_permission
from medlabel.api.schemas import UserCreate, UserRead
from medlabel.security.rbac import Permission

router = APIRouter(prefix="/users", tags=["users"])
Admin = Annotated[Actor, Depends(global_permission(Permission.USER_MANAGE))]


@router.get("", response_model=list[UserRead])
def list_users(actor: Admin, session: SessionDep) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in accounts.list_users(session)]


@router.post("", response_model=UserRead, status_code=201)
def create_user(body: UserCreate, actor: Admin, session: SessionDep) -> UserRead:
    user = accounts.create_user(
        session, body.username, body.password, role=body.role, display_name=body.display_name, actor=actor
    )
    return UserRead.model_validate(user)
