"""Demo content for ``medlabel demo``: an admin, a team and a project. Grows as features land."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.projects import service as projects
from medlabel.security.rbac import GlobalRole
from medlabel.storage.models import Project, User

__all__ = ["load_demo", "DEMO_TEAM", "DEMO_PROJECT", "DEMO_HOOKS", "DemoHook"]

DEMO_PROJECT = "Demo: chest X-ray triage"
DEMO_TEAM = [
    ("ann", "annotator"),
    ("rita", "reviewer"),
    ("val", "validator"),
    ("audrey", "auditor"),
]
CREDENTIALS_FILE = "demo-credentials.txt"

# Domains add demo content with a hook: (session, home, project_id, admin actor) -> extra lines to print.
DemoHook = Callable[[Session, Path, int, Actor], list[str]]
DEMO_HOOKS: list[DemoHook] = []


def load_demo(session: Session, home: Path, *, password_factory: Callable[[], str]) -> list[str]:
    """Create the demo users and project once; later runs reuse them. Returns credential lines."""
    cred_path = Path(home) / CREDENTIALS_FILE
    if session.scalar(select(User.id).where(User.username == "admin")) is not None and cred_path.exists():
        return cred_path.read_text().splitlines()
    system = Actor(user_id=None, username="demo", role=GlobalRole.ADMIN)
    lines: list[str] = []
    admin_pw = password_factory()
    admin = session.scalar(select(User).where(User.username == "admin"))
    if admin is None:
        admin = accounts.create_user(
            session, "admin", admin_pw, role=GlobalRole.ADMIN, display_name="Administrator", actor=system
        )
    else:
        accounts.set_password(session, admin, admin_pw, actor=system)
    lines.append(f"admin    / {admin_pw}   (administrator)")
    admin_actor = Actor(user_id=admin.id, username=admin.username, role=admin.role)
    project = session.scalar(select(Project).where(Project.name == DEMO_PROJECT))
    if project is None:
        project = projects.create_project(
            session,
            admin_actor,
            DEMO_PROJECT,
            "Label frontal chest radiographs for pneumothorax, effusion and nodules.",
        )
    for username, role in DEMO_TEAM:
        pw = password_factory()
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            accounts.create_user(session, username, pw, display_name=username.title(), actor=system)
        else:
            accounts.set_password(session, user, pw, actor=system)
        projects.add_member(session, admin_actor, project, username, role)
        lines.append(f"{username:8s} / {pw}   ({role} in {DEMO_PROJECT!r})")
    for hook in DEMO_HOOKS:
        lines.extend(hook(session, home, project.id, admin_actor))
    fd = os.open(cred_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return lines


from medlabel.items import demo as _items_demo  # noqa: E402, F401  (registers the items demo hook)
from medlabel.labeling import demo as _labeling_demo  # noqa: E402, F401  (registers the labeling demo hook)
