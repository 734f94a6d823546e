"""``medlabel``: set up, serve, run workers, manage users and projects, check the audit log."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from medlabel import __version__
from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.config import load_settings
from medlabel.errors import MedlabelError
from medlabel.runtime import Runtime, create_runtime
from medlabel.security.rbac import GlobalRole
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project

app = typer.Typer(help="medlabel: annotation of medical images with multi-tier QA.", no_args_is_help=True)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
project_app = typer.Typer(help="Manage projects.", no_args_is_help=True)
member_app = typer.Typer(help="Manage project members.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the tamper-evident audit log.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect background jobs.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")
project_app.add_typer(member_app, name="member")
app.add_typer(audit_app, name="audit")
app.add_typer(jobs_app, name="jobs")


def _cli_actor() -> Actor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(user_id=None, username=f"cli:{who}", role=GlobalRole.ADMIN, ip="local")


def _runtime() -> Runtime:
    try:
        return create_runtime(load_settings())
    except MedlabelError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from None


def _fail(exc: MedlabelError) -> typer.Exit:
    typer.secho(f"error: {exc.message}", fg="red", err=True)
    return typer.Exit(1)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def init() -> None:
    """Create the data directory ($MEDLABEL_HOME), its secret key (0600) and the database schema."""
    rt = _runtime()
    typer.echo(f"medlabel {__version__} initialised in {rt.settings.home}")
    typer.echo(f"database: {rt.engine.url.render_as_string(hide_password=True)}")
    rt.close()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run the job worker (once: in the server process, or with --workers N in the supervisor).",
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes (uvicorn workers). Each has its own pixel caches; "
            "the job worker still runs once.",
        ),
    ] = 1,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request (uvicorn's access log).")
    ] = True,
) -> None:
    """Run the web server (API under /api/v1, the browser app at /)."""
    import uvicorn

    from medlabel.api.app import create_app
    from medlabel.api.deps import warm_up

    rt = _runtime()  # creates the data directory and migrates the database, once
    typer.echo(
        f"medlabel {__version__} serving http://{host}:{port}/ (data in {rt.settings.home}"
        f"{f', {workers} server processes' if workers > 1 else ''})"
    )
    try:
        if workers == 1:
            app = create_app(rt, run_worker=worker)
            warm_up(rt, app)
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level="info",
                access_log=access_log,
            )
            return
        # Several processes: uvicorn spawns them, each building its own runtime from the same
        # environment (_server_app). The job worker must run exactly once: here, in the
        # supervising process, which serves no requests.
        if worker:
            rt.start_worker()
        else:
            rt.engine.dispose()
        # The processes share one listening socket. libuv (uvloop) accepts every pending
        # connection in one wake-up, so concurrent clients (several batch uploads at once) land
        # 3-1 or 4-0 on two processes and one does all the work; accepting one connection per
        # wake-up spreads them (measured: balanced in 10 of 18 runs instead of 1 of 6).
        os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
        uvicorn.run(
            "medlabel.cli.main:_server_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            access_log=access_log,
            # a child still importing on a busy machine must not be killed as hung (uvicorn's
            # default, 5 s, restarted children over and over under load)
            timeout_worker_healthcheck=60,
        )
    finally:
        rt.close()


def _server_app() -> object:
    """The app of one server process under ``serve --workers N`` (N > 1): settings from the
    environment, no migration (the supervisor ran it), no job worker (the supervisor runs it)."""
    from medlabel.api.app import create_app
    from medlabel.api.deps import warm_up

    try:
        rt = create_runtime(load_settings(), migrate=False)
    except MedlabelError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise SystemExit(2) from None
    app = create_app(rt, run_worker=False)
    warm_up(rt, app)
    return app


@app.command()
def worker(workers: Annotated[int, typer.Option(help="Worker threads.")] = 2) -> None:
    """Run job workers until interrupted (SQLite queue, or Redis when MEDLABEL_REDIS_URL is set)."""
    import signal
    import threading

    rt = _runtime()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stale = float(os.environ.get("MEDLABEL_JOB_STALE_SECONDS", "60"))
    from datetime import timedelta

    rt.start_worker(workers=workers, stale_after=timedelta(seconds=stale))
    typer.echo(
        f"medlabel worker running with {workers} threads (queue: {'redis' if rt.settings.redis_url else 'sqlite'})"
    )
    sys.stdout.flush()
    stop.wait()
    rt.close()


# ---------------------------------------------------------------- users


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        typer.secho("error: the passwords differ", fg="red", err=True)
        raise typer.Exit(1)
    return first


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help="Global role: admin or user.")] = "user",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    display_name: Annotated[str, typer.Option(help="Name shown in the UI.")] = "",
) -> None:
    """Create a user account."""
    password = _read_password(password_stdin)
    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            u = accounts.create_user(
                s, name, password, role=role, display_name=display_name, actor=_cli_actor()
            )
            typer.echo(f"created user {u.username!r} (id {u.id}, role {u.role})")
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


@user_app.command("list")
def user_list() -> None:
    """List user accounts."""
    rt = _runtime()
    with session_scope(rt.sessions) as s:
        for u in accounts.list_users(s):
            locked = " locked" if u.locked_until and u.locked_until > datetime.now(UTC) else ""
            typer.echo(f"{u.id:5d}  {u.username:24s} {u.role:6s}{'' if u.is_active else ' inactive'}{locked}")
    rt.close()


# ---------------------------------------------------------------- projects


@project_app.command("create")
def project_create(
    name: str,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    schema: Annotated[Path | None, typer.Option(help="Label schema (YAML), see docs/schema.md.")] = None,
) -> None:
    """Create a project, optionally with its label schema."""
    from medlabel.projects import service as projects

    text = None
    if schema is not None:
        try:
            text = schema.read_text()
        except OSError as exc:
            typer.secho(f"error: cannot read schema file {schema}: {exc.strerror}", fg="red", err=True)
            raise typer.Exit(2) from None
    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            actor = _cli_actor()
            p = projects.create_project(s, actor, name, description)
            if text is not None:
                from medlabel.labeling.schema_service import parse_schema_document, put_schema

                put_schema(s, actor, p, schema=parse_schema_document(text))
            typer.echo(f"created project {p.name!r} (id {p.id}){' with its label schema' if text else ''}")
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


@project_app.command("list")
def project_list() -> None:
    """List projects with their member counts."""
    from medlabel.projects import service as projects

    rt = _runtime()
    with session_scope(rt.sessions) as s:
        for p in projects.list_projects(s, _cli_actor()):
            members = projects.list_members(s, p)
            typer.echo(f"{p.id:5d}  {p.name:32s} {len({u.id for u, _ in members})} members")
    rt.close()


def _find_project(s: Session, ref: str) -> Project:
    from sqlalchemy import select

    from medlabel.errors import NotFound

    stmt = (
        select(Project).where(Project.id == int(ref))
        if ref.isdigit()
        else select(Project).where(Project.name == ref)
    )
    p = s.scalar(stmt)
    if p is None:
        raise NotFound(f"no project {ref!r} (give its id or exact name)")
    return p


@member_app.command("add")
def member_add(
    project: str,
    user: str,
    role: Annotated[str, typer.Option(help="manager, annotator, reviewer, validator or auditor.")],
) -> None:
    """Give USER a ROLE in PROJECT (id or name)."""
    from medlabel.projects import service as projects

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _find_project(s, project)
            projects.add_member(s, _cli_actor(), p, user, role)
            typer.echo(f"{user} is now {role} in {p.name!r}")
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


@member_app.command("remove")
def member_remove(
    project: str, user: str, role: Annotated[str, typer.Option(help="The role to take away.")]
) -> None:
    """Take ROLE in PROJECT away from USER."""
    from medlabel.projects import service as projects

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            p = _find_project(s, project)
            projects.remove_member(s, _cli_actor(), p, user, role)
            typer.echo(f"{user} is no longer {role} in {p.name!r}")
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


# ---------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 1 naming the first record changed, removed or inserted."""
    from medlabel.audit import service as audit

    rt = _runtime()
    with session_scope(rt.sessions) as s:
        result = audit.verify(s)
    rt.close()
    if result.problem is not None:
        typer.secho(
            f"audit log FAILED verification: {result.problem.message} (record {result.problem.seq}, {result.problem.kind})",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {result.checked} records verified")


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None, typer.Option(help="Only records from this date (YYYY-MM-DD or ISO time), UTC.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="File to write (default: standard output).")] = None,
) -> None:
    """Write audit records as JSON lines."""
    from medlabel.audit import service as audit
    from medlabel.audit.events import AuditAction

    start: datetime | None = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            try:
                start = datetime.combine(date.fromisoformat(since), datetime.min.time())
            except ValueError:
                typer.secho(
                    f"error: --since must be a date like 2026-11-01, found {since!r}", fg="red", err=True
                )
                raise typer.Exit(2) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    rt = _runtime()
    with session_scope(rt.sessions) as s:
        fh = out.open("w") if out else sys.stdout
        try:
            n = audit.export_jsonl(s, fh, since=start)
        finally:
            if out:
                fh.close()
        audit.record(
            s,
            _cli_actor().event(
                AuditAction.AUDIT_EXPORT, object_type="audit", detail={"count": n, "since": since}
            ),
        )
    rt.close()
    if out:
        typer.echo(f"wrote {n} records to {out}", err=True)


# ---------------------------------------------------------------- jobs


def wait_for_job(rt: Runtime, job_id: str, *, timeout: float = 3600) -> str:
    """Show a progress bar until the job ends; return its final state."""
    from medlabel.jobs import service as jobs

    deadline = time.monotonic() + timeout
    last = 0
    with typer.progressbar(length=100, label=f"job {job_id[:8]}") as bar:
        while True:
            with session_scope(rt.sessions) as s:
                job = jobs.get_job(s, job_id)
                state, progress, message = job.state, job.progress, job.message
            if progress > last:
                bar.update(progress - last)
                last = progress
            if state in (jobs.SUCCEEDED, jobs.FAILED) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    typer.echo(f"job {job_id}: {state} — {message}")
    return state


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until the job ends.")] = False,
) -> None:
    """Show a job's state and progress."""
    from medlabel.jobs import service as jobs

    rt = _runtime()
    try:
        if wait:
            state = wait_for_job(rt, job_id)
            raise typer.Exit(0 if state == jobs.SUCCEEDED else 1)
        with session_scope(rt.sessions) as s:
            j = jobs.get_job(s, job_id)
            typer.echo(
                json.dumps(
                    {
                        "id": j.id,
                        "kind": j.kind,
                        "state": j.state,
                        "progress": j.progress,
                        "message": j.message,
                        "result": j.result,
                        "error": j.error,
                        "attempts": j.attempts,
                    },
                    indent=2,
                )
            )
    except MedlabelError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


@app.command()
def selftest(
    steps: Annotated[int, typer.Option(help="Steps to report.")] = 10,
    delay: Annotated[float, typer.Option(help="Seconds per step.")] = 0.1,
) -> None:
    """Queue a self-test job, run an in-process worker and follow its progress."""
    from medlabel.jobs import service as jobs

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            job = jobs.create_job(s, _cli_actor(), "system.selftest", {"steps": steps, "delay": delay})
            job_id = job.id
        rt.enqueue(job_id)
        rt.start_worker(workers=1)
        state = wait_for_job(rt, job_id, timeout=steps * delay + 60)
    finally:
        rt.close()
    raise typer.Exit(0 if state == jobs.SUCCEEDED else 1)


# ---------------------------------------------------------------- de-identification

DEFAULT_DEID_OPTIONS = (
    "retain_longitudinal_modified_dates",
    "retain_patient_characteristics",
    "clean_descriptors",
)


@app.command()
def deid(
    in_dir: Annotated[Path, typer.Argument(help="Folder with DICOM and NIfTI files (read only).")],
    out_dir: Annotated[Path, typer.Argument(help="New folder for the de-identified copies.")],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            help="PS3.15 Table E.1-1 option column (repeat). Default: "
            + ", ".join(DEFAULT_DEID_OPTIONS)
            + ". Use --basic-only for none.",
        ),
    ] = None,
    basic_only: Annotated[bool, typer.Option("--basic-only", help="Basic Profile without options.")] = False,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="Key for consistent UIDs and date offsets (created, 0600, if missing). "
            "Default: $MEDLABEL_HOME/deid-cli.key"
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the per-file JSON report here.")] = None,
) -> None:
    """De-identify a folder with the same code as ingest (DICOM PS3.15 Annex E; NIfTI headers).

    Images that may carry burned-in text are written to OUT/quarantine/ for a person to check.
    """
    from medlabel.deid import (
        DeidConfig,
        DeidContext,
        InMemoryDateOffsetStore,
        InMemoryPseudonymStore,
        Option,
        deidentify_folder,
    )

    names = [] if basic_only else list(option or DEFAULT_DEID_OPTIONS)
    try:
        options = frozenset(Option(n) for n in names)
    except ValueError:
        typer.secho(
            f"error: unknown option in {names}; known: {', '.join(o.value for o in Option)}",
            fg="red",
            err=True,
        )
        raise typer.Exit(2) from None
    key_path = secret_file or (load_settings().home / "deid-cli.key")
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        typer.echo(
            f"created de-identification key {key_path} (keep it to get the same UIDs next time)", err=True
        )
    secret = bytes.fromhex(key_path.read_text().strip())
    try:
        config = DeidConfig(project_secret=secret, options=options)
        result = deidentify_folder(
            in_dir, out_dir, config, DeidContext(InMemoryPseudonymStore(), InMemoryDateOffsetStore(secret))
        )
    except MedlabelError as exc:
        raise _fail(exc) from None
    doc = result.to_dict()
    if report:
        report.write_text(json.dumps(doc, indent=2))
    counts = doc["counts"]
    typer.echo(", ".join(f"{n} {k}" for k, n in counts.items()))
    for f in doc["files"]:
        if f["status"] in ("failed", "quarantined"):
            typer.echo(f"  {f['status']}: {f['source']}: {f['note'] or '; '.join(f['reasons'])}")
    if counts.get("failed"):
        raise typer.Exit(1)


# ---------------------------------------------------------------- demo


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only create the demo content.")] = False,
) -> None:
    """Initialise, load demo content (users, a project) and serve. Prints the admin credentials."""
    from medlabel.demo import load_demo

    rt = _runtime()
    try:
        with session_scope(rt.sessions) as s:
            creds = load_demo(s, rt.settings.home, password_factory=lambda: secrets.token_urlsafe(12))
    finally:
        rt.close()
    typer.secho("\nmedlabel demo is ready.", fg="green", bold=True)
    for line in creds:
        typer.echo(f"  {line}")
    typer.echo(f"  (credentials are also in {Path(load_settings().home) / 'demo-credentials.txt'})\n")
    if not no_serve:
        serve(host=host, port=port, worker=True)


# ---------------------------------------------------------------- domain commands

DOMAIN_CLI_MODULES = ("medlabel.cli.items", "medlabel.cli.labeling", "medlabel.cli.quality")


def _register_domain_commands() -> None:
    """Each domain adds its commands in ``medlabel/cli/<domain>.py`` with ``register(app)``."""
    import importlib

    for name in DOMAIN_CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_domain_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover  (python -m medlabel.cli.main)
    app()
