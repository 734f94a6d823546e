"""``medlabel report`` and ``medlabel agreement``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from medlabel.storage.models import Project

__all__ = ["register"]


def _project(session: Session, ref: str) -> Project:
    from medlabel.cli.main import _find_project

    return _find_project(session, ref)


def report(
    project: Annotated[str, typer.Argument(help="Project id or exact name.")],
    week: Annotated[str, typer.Option(help="ISO week, e.g. 2026-W48.")],
    out: Annotated[Path, typer.Option(help="HTML file to write; .csv and .json are written beside it.")],
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for confidence intervals.")] = 1000,
) -> None:
    """Build the weekly quality report as a job (with progress) and write HTML, CSV and JSON."""
    from medlabel.accounts.service import Actor
    from medlabel.cli.main import _cli_actor, _fail, _runtime, wait_for_job
    from medlabel.errors import MedlabelError
    from medlabel.jobs import service as jobs
    from medlabel.quality.jobs import period_from_params
    from medlabel.storage.db import session_scope

    rt = _runtime()
    try:
        actor: Actor = _cli_actor()
        with session_scope(rt.sessions) as s:
            p = _project(s, project)
            params = {"project_id": p.id, "week": week, "bootstrap_n": bootstrap}
            period_from_params(params)
            job_id = jobs.create_job(s, actor, "quality.report", params, project_id=p.id).id
        rt.enqueue(job_id)
        rt.start_worker(workers=1)
        state = wait_for_job(rt, job_id)
        with session_scope(rt.sessions) as s:
            job = jobs.get_job(s, job_id)
            result, message = job.result or {}, job.message
        if state != jobs.SUCCEEDED:
            typer.secho(f"error: the report failed: {message}", fg="red", err=True)
            raise typer.Exit(1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(rt.blobs.get(result["html"]))
        out.with_suffix(".csv").write_bytes(rt.blobs.get(result["csv"]))
        out.with_suffix(".json").write_bytes(rt.blobs.get(result["json"]))
        typer.echo(
            f"wrote {out}, {out.with_suffix('.csv')} and {out.with_suffix('.json')} ({result['alerts']} alerts)"
        )
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


def agreement(
    project: Annotated[str, typer.Argument(help="Project id or exact name.")],
    week: Annotated[str | None, typer.Option(help="ISO week (default: the current week).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 200,
) -> None:
    """Print the project's agreement figures (kappa/alpha, matching F1, Dice, HD95)."""
    from medlabel import clock
    from medlabel.cli.main import _fail, _runtime
    from medlabel.errors import MedlabelError
    from medlabel.quality.report import iso_week_period
    from medlabel.quality.service import project_report
    from medlabel.storage.db import session_scope

    if week is None:
        y, w, _ = clock.now().isocalendar()
        week = f"{y}-W{w:02d}"
    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _project(s, project)
            rep = project_report(s, p, period=iso_week_period(week), bootstrap_n=bootstrap)
            doc = rep.to_dict()
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    typer.echo(f"agreement, {week}  (section, subject, metric, value [95% CI], items)")
    for section, subject, metric, value, lo, hi, n in rep.rows():
        if section == "headline" or section.startswith("agreement"):
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi else ""
            typer.echo(f"  {section:24s} {subject:20s} {metric:18s} {value:8.3f}{ci}  n={n}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("agreement")(agreement)
