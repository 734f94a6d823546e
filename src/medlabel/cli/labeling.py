"""``medlabel project schema`` and ``medlabel tasks …``: label schemas and the task pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medlabel.errors import MedlabelError
from medlabel.storage.db import session_scope

__all__ = ["register"]


def _project(s: Any, ref: str) -> Any:
    from medlabel.cli.main import _find_project

    return _find_project(s, ref)


def project_schema(
    project: Annotated[str, typer.Argument(help="Project id or exact name.")],
    file: Annotated[
        Path,
        typer.Argument(help="Label schema, YAML or JSON (see docs/schema.md).", exists=True, dir_okay=False),
    ],
) -> None:
    """Store FILE as the next label-schema version of PROJECT (classes left out are retired)."""
    from medlabel.cli.main import _cli_actor, _fail, _runtime
    from medlabel.labeling import schema_service

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _project(s, project)
            schema, change = schema_service.put_schema(
                s, _cli_actor(), p, schema=schema_service.parse_schema_document(file.read_bytes())
            )
            typer.echo(f"project {p.name!r}: label schema {schema.name!r} is now version {schema.version}")
            for what in ("added", "retired", "restored", "modified"):
                ids = getattr(change, what)
                if ids:
                    typer.echo(f"  {what}: {', '.join(ids)}")
            for w in change.warnings:
                typer.secho(f"  warning: {w}", fg="yellow")
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


def tasks_sync(project: Annotated[str, typer.Argument(help="Project id or exact name.")]) -> None:
    """Create annotate tasks for every ready item of PROJECT that has none yet."""
    from medlabel.cli.main import _cli_actor, _fail, _runtime
    from medlabel.labeling import task_service

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _project(s, project)
            out = task_service.sync_tasks(s, _cli_actor(), p)
            typer.echo(
                f"{out['items']} new item(s), {out['tasks']} task(s), {out['overlap_items']} overlap item(s)"
            )
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


def tasks_status(project: Annotated[str, typer.Argument(help="Project id or exact name.")]) -> None:
    """Items per stage, open and claimed tasks per stage, and decisions per person."""
    from medlabel.cli.main import _fail, _runtime
    from medlabel.labeling import task_service

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _project(s, project)
            rep = task_service.status(s, p.id)
            typer.echo(f"project {p.name!r}")
            typer.echo(f"{'stage':10s} {'items':>6s} {'open':>6s} {'claimed':>8s}")
            for st in ("annotate", "review", "validate", "audit", "done"):
                typer.echo(
                    f"{st:10s} {rep.items_by_stage.get(st, 0):6d} {rep.open_by_stage.get(st, 0):6d} "
                    f"{rep.claimed_by_stage.get(st, 0):8d}"
                )
            if rep.gold_items:
                typer.echo(f"gold items: {rep.gold_items}")
            people = sorted(set(rep.done_by_person) | set(rep.claimed_by_person))
            if people:
                typer.echo(
                    f"\n{'person':16s} {'annotate':>8s} {'review':>7s} {'validate':>8s} {'audit':>6s} {'holding':>8s}"
                )
                for name in people:
                    d = rep.done_by_person.get(name, {})
                    typer.echo(
                        f"{name:16s} {d.get('annotate', 0):8d} {d.get('review', 0):7d} {d.get('validate', 0):8d} "
                        f"{d.get('audit', 0):6d} {rep.claimed_by_person.get(name, 0):8d}"
                    )
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


def register(app: typer.Typer) -> None:
    project_group = next((g for g in app.registered_groups if g.name == "project"), None)
    if project_group is not None and project_group.typer_instance is not None:
        project_group.typer_instance.command("schema")(project_schema)
    tasks_app = typer.Typer(help="The task pool: create tasks, show progress.", no_args_is_help=True)
    tasks_app.command("sync")(tasks_sync)
    tasks_app.command("status")(tasks_status)
    app.add_typer(tasks_app, name="tasks")
