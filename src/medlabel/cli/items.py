"""``medlabel import``: import files, folders and ZIP archives into a project from the shell;
``medlabel blobs sweep``: delete the blob store's orphans."""

from __future__ import annotations

import os
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


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (copy it across file systems). A file big enough to be memory-mapped by
    the import (``MEDLABEL_IMPORT_MAP_BYTES``) is copied: a mapped file cut short by someone else
    meanwhile would crash the process reading it (SIGBUS), and a copy is ours alone."""
    from medlabel.items.ingest import map_bytes

    try:
        if src.stat().st_size < map_bytes():
            os.link(src, dst)
            return
    except OSError:  # another file system, or links not allowed
        pass
    shutil.copyfile(src, dst)


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
                project_id = proj.id
            # outside any transaction (on SQLite a writing one would hold the write turn meanwhile);
            # hard links where the data folder is on the same file system: the import only reads
            # the files of its upload folder and removes the folder at the end
            for i, f in enumerate(files):
                _link_or_copy(f, upload / safe_name(f.name, i))
            with session_scope(rt.sessions) as s:
                proj = s.get(Project, project_id)
                if proj is None:
                    raise NotFound(f"project {project!r} was deleted meanwhile")
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

    blobs_app = typer.Typer(help="Look after the blob store.", no_args_is_help=True)
    app.add_typer(blobs_app, name="blobs")

    @blobs_app.command(
        "scrub-preambles",
        help="Store again, with a zero preamble, every stored DICOM file that kept its original's "
        "128-byte preamble (imports before 2026-11-29 copied it; it may hold anything), point the rows "
        "at the new files, then sweep the old ones away (medlabel blobs sweep).",
    )
    def blobs_scrub_preambles(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Change nothing; count the files that would be rewritten.")
        ] = False,
        sweep: Annotated[
            bool, typer.Option("--sweep/--no-sweep", help="Sweep the replaced files away afterwards.")
        ] = True,
        older_than_hours: Annotated[
            float, typer.Option("--older-than-hours", help="Passed to the sweep: only files older than this go.")
        ] = 24.0,
    ) -> None:
        from datetime import timedelta

        from medlabel.errors import ConfigurationError
        from medlabel.items import blob_sweep, preamble_scrub
        from medlabel.storage.blobs import LocalBlobStore

        rt = _runtime()
        try:
            if not isinstance(rt.blobs, LocalBlobStore):
                raise ConfigurationError(f"scrubbing needs a local blob store, found {type(rt.blobs).__name__}")
            report = preamble_scrub.scrub_preambles(rt.sessions, rt.blobs, actor=_cli_actor(), dry_run=dry_run)
            swept = None
            if sweep and not dry_run and report.rewritten:
                swept = blob_sweep.sweep_blobs(
                    rt.sessions, rt.blobs, older_than=timedelta(hours=older_than_hours), dry_run=False, actor=_cli_actor()
                )
        except MedlabelError as exc:
            raise _fail(exc) from None
        finally:
            rt.close()
        if report.skipped:
            typer.echo(f"nothing done: {report.skipped} ({', '.join(report.blocking_jobs)})")
            raise typer.Exit(1)
        verb = "would rewrite" if dry_run else "rewrote"
        typer.echo(f"{report.scanned} stored DICOM files: {verb} {report.rewritten}, {report.clean} clean")
        if swept is not None:
            typer.echo(
                f"sweep: {swept.deleted} replaced files deleted, {swept.too_new} newer than "
                f"{older_than_hours:g} h kept (run medlabel blobs sweep later)"
            )

    @blobs_app.command(
        "sweep",
        help="Delete stored files that no item, instance, quarantine entry or job names (orphans "
        "left by failed or abandoned imports), stale temporary files and empty directories. Touches "
        "nothing while an import or another blob-writing job is queued or running.",
    )
    def blobs_sweep(
        older_than_hours: Annotated[
            float,
            typer.Option(
                "--older-than-hours",
                max=24 * 3650,
                help="Only blobs, temporary files and empty directories older than this (at least 1).",
            ),
        ] = 24.0,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Delete nothing; report what would be deleted.")
        ] = False,
    ) -> None:
        from datetime import timedelta

        from medlabel.errors import ConfigurationError
        from medlabel.items import blob_sweep
        from medlabel.storage.blobs import LocalBlobStore

        rt = _runtime()
        try:
            if not isinstance(rt.blobs, LocalBlobStore):
                raise ConfigurationError(
                    f"the blob sweep needs a local blob store, found {type(rt.blobs).__name__}"
                )
            report = blob_sweep.sweep_blobs(
                rt.sessions,
                rt.blobs,
                older_than=timedelta(hours=older_than_hours),
                dry_run=dry_run,
                actor=_cli_actor(),
            )
        except MedlabelError as exc:
            raise _fail(exc) from None
        finally:
            rt.close()
        would = "would delete" if report.dry_run else "deleted"
        typer.echo(
            f"{report.blobs_scanned} blobs scanned: {report.referenced} referenced, "
            f"{report.orphaned} orphaned (older than {report.older_than_hours:g} h), "
            f"{report.too_new} unreferenced but newer"
        )
        typer.echo(
            f"{would} {report.deleted} blobs ({report.bytes_freed} bytes), "
            f"{report.tmp_files_removed} temporary files, {report.dirs_removed} empty directories; "
            f"kept {report.kept_in_use} found in use on re-check, {report.failed} failed"
        )
        if report.restored:
            typer.echo(f"put back {report.restored} blobs an interrupted sweep had set aside")
        for d in report.digests:
            typer.echo(f"  {d}")
        if report.digests_truncated:
            typer.echo(f"  … and {report.deleted - len(report.digests)} more")
        if report.skipped:
            typer.secho(f"stopped: {report.skipped}", fg="yellow", err=True)
            for j in report.blocking_jobs:
                typer.echo(f"  waiting for job {j}", err=True)
        raise typer.Exit(1 if report.skipped or report.failed else 0)
