"""``medlabel import``: import files, folders and ZIP archives into a project from the shell."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from medlabel.errors import MedlabelError, NotFound
from medlabel.items import service as items
from medlabel.items.ingest import new_upload_dir, safe_name
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise typer.BadParameter(f"{p} is neither a file nor a folder")
    return out


def register(app: typer.Typer) -> None:
    from medlabel.cli.main import _cli_actor, _fail, _runtime, wait_for_job

    @app.command("import")
    def import_cmd(
        project: Annotated[str, typer.Argument(help="Project id or name.")],
        paths: Annotated[list[Path], typer.Argument(help="Files, folders (recursive) and ZIP archives.")],
        wait: Annotated[
            bool, typer.Option("--wait/--no-wait", help="Run the import here and follow it.")
        ] = True,
    ) -> None:
        """Import images into a project (de-identified on the way in), with a progress bar."""
        from medlabel.jobs import service as jobs

        files = _files(paths)
        if not files:
            typer.secho("error: no files to import", fg="red", err=True)
            raise typer.Exit(2)
        rt = _runtime()
        upload = new_upload_dir(rt.settings.home)
        try:
            with session_scope(rt.sessions) as s:
                proj = s.get(Project, int(project)) if project.isdigit() else None
                proj = proj or s.scalar(select(Project).where(Project.name == project))
                if proj is None:
                    raise NotFound(f"no project with id or name {project!r}")
                for i, f in enumerate(files):
                    shutil.copyfile(f, upload / safe_name(f.name, i))
                job = items.start_import(
                    s, _cli_actor(), project=proj, upload_dir=upload, home=rt.settings.home
                )
                job_id = job.id
            rt.enqueue(job_id)
            if not wait:
                typer.echo(f"queued import job {job_id} ({len(files)} files)")
                return
            rt.start_worker(workers=1)
            state = wait_for_job(rt, job_id)
            with session_scope(rt.sessions) as s:
                result = jobs.get_job(s, job_id).result or {}
        except MedlabelError as exc:
            shutil.rmtree(upload, ignore_errors=True)
            raise _fail(exc) from None
        finally:
            rt.close()
        counts = result.get("counts", {})
        typer.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing imported")
        for f in result.get("files", []):
            if f.get("status") in ("error", "quarantined"):
                typer.echo(f"  {f['status']:11s} {f['name']}: {f.get('message', '')}")
        raise typer.Exit(0 if state == jobs.SUCCEEDED else 1)
