"""What PostgreSQL alone can do: the claim + submit cycle of ``bench_workflow.py`` as plain SQL
driven by ``pgbench`` (C, no Python, no ORM), on the same schema and the same machine.

Run: .venv/bin/python bench/bench_pg_ceiling.py [--clients 50] [--seconds 15] [--pg URL]

Each pgbench transaction is one claim + submit: the statements the services send (access check,
guidelines, the one-statement claim, the item, its workflow row, schema, annotation set and
history reads, the task/review/workflow writes, and an audit append on a free chain for each of
the two transactions), with the same locks. Its rate is the ceiling for ``bench_workflow.py``'s
claims/s on this machine: the Python services can only add to the cost of a cycle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))

import bench_workflow as bw  # noqa: E402

from medlabel.config import Settings, normalize_database_url  # noqa: E402
from medlabel.items.models import Item  # noqa: E402
from medlabel.runtime import create_runtime  # noqa: E402

CLAIM = """
BEGIN;
SELECT id, name, settings FROM projects WHERE id = :pid;
SELECT role FROM memberships WHERE project_id = :pid AND user_id = :uid;
SELECT id, version FROM guidelines WHERE project_id = :pid ORDER BY version DESC LIMIT 1;
UPDATE tasks SET state = 'claimed', assignee_id = :uid, claimed_at = now(), last_heartbeat_at = now(),
  lease_expires_at = now() + interval '1 hour', claim_count = claim_count + 1
WHERE id = coalesce(
  (SELECT p.id FROM tasks p WHERE +p.project_id = :pid AND p.stage = 'annotate' AND p.assignee_id = :uid
     AND p.state IN ('open', 'claimed') ORDER BY p.priority DESC LIMIT 1 FOR UPDATE OF p SKIP LOCKED),
  (SELECT p.id FROM tasks p WHERE p.project_id = :pid AND p.stage = 'annotate' AND p.state = 'open'
     AND NOT p.reserved ORDER BY p.priority DESC, p.created_at, p.id LIMIT 1 FOR UPDATE OF p SKIP LOCKED))
RETURNING id AS tid, item_id AS iid \\gset
SELECT id AS hid, seq AS hseq, hash AS hhash FROM audit_head WHERE id = coalesce(
  (SELECT id FROM audit_head ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED), 1 + pg_backend_pid() % 32)
FOR UPDATE \\gset
WITH ev AS (INSERT INTO audit_events (seq, at, actor_id, actor, ip, action, object_type, object_id,
    project_id, outcome, detail, prev_hash, hash, chain, prev_seq)
  VALUES (nextval('audit_event_seq'), now(), :uid, 'u', '', 'task.claim', 'task', :tid, :pid, 'success',
    '{"stage": "annotate"}', :hhash, md5(random()::text) || md5(random()::text), :hid, :hseq)
  RETURNING seq, hash)
UPDATE audit_head SET seq = (SELECT seq FROM ev), hash = (SELECT hash FROM ev) WHERE id = :hid;
COMMIT;
"""

SUBMIT = """
BEGIN;
SELECT id, name, settings FROM projects WHERE id = :pid;
SELECT * FROM tasks WHERE id = :tid FOR UPDATE;
SELECT * FROM items WHERE id = :iid;
SELECT * FROM item_workflow WHERE item_id = :iid FOR UPDATE;
SELECT * FROM label_schemas WHERE project_id = :pid ORDER BY version DESC LIMIT 1;
SELECT * FROM annotation_sets WHERE item_id = :iid AND kind = 'main' AND owner_key = 0;
SELECT * FROM reviews WHERE item_id = :iid ORDER BY id;
UPDATE tasks SET state = 'done', completed_at = now(), completed_by = :uid, lease_expires_at = NULL WHERE id = :tid;
INSERT INTO reviews (project_id, item_id, task_id, user_id, username, stage, decision, to_stage,
  annotation_version, comment, at) VALUES (:pid, :iid, :tid, :uid, 'u', 'annotate', 'submit', 'done', 0, '', now());
UPDATE item_workflow SET stage = 'done', updated_at = now(), done_count = done_count + 1, done_at = now()
  WHERE item_id = :iid;
SELECT id AS hid, seq AS hseq, hash AS hhash FROM audit_head WHERE id = coalesce(
  (SELECT id FROM audit_head ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED), 1 + pg_backend_pid() % 32)
FOR UPDATE \\gset
WITH ev AS (INSERT INTO audit_events (seq, at, actor_id, actor, ip, action, object_type, object_id,
    project_id, outcome, detail, prev_hash, hash, chain, prev_seq)
  VALUES (nextval('audit_event_seq'), now(), :uid, 'u', '', 'task.decision', 'task', :tid, :pid, 'success',
    '{"decision": "submit"}', :hhash, md5(random()::text) || md5(random()::text), :hid, :hseq)
  RETURNING seq, hash)
UPDATE audit_head SET seq = (SELECT seq FROM ev), hash = (SELECT hash FROM ev) WHERE id = :hid;
COMMIT;
"""


def _fill(url: str, home: Path, tasks: int, users: int) -> tuple[int, int, int]:
    """A bench project (``bench_workflow._setup``) grown to ``tasks`` open annotate tasks by SQL."""
    rt = create_runtime(Settings(home=home, database_url=url))
    try:
        pid, actors = bw._setup(rt, users, 10)
        cols = [c.name for c in Item.__table__.columns if c.name not in ("id", "name", "dedup_key")]
        listed = ", ".join(cols)
        with rt.engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO items ({listed}, name, dedup_key) SELECT {listed}, 'x' || g, 'x-' || g "
                    f"FROM items, generate_series(1, {tasks}) g WHERE items.id = "
                    f"(SELECT min(id) FROM items WHERE project_id = {pid})"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO item_workflow (item_id, project_id, stage, overlap_k, is_gold, done_count, "
                    "audit_selected, updated_at) SELECT id, project_id, 'annotate', 1, false, 0, false, now() "
                    f"FROM items WHERE project_id = {pid} AND name LIKE 'x%'"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO tasks (project_id, item_id, stage, state, reserved, priority, is_gold, "
                    "created_at, active_seconds, claim_count) SELECT project_id, id, 'annotate', 'open', false, "
                    f"0, false, now(), 0, 0 FROM items WHERE project_id = {pid} AND name LIKE 'x%'"
                )
            )
            conn.execute(text("ANALYZE"))
        ids = [a.user_id or 0 for a in actors]
        return pid, min(ids), max(ids)
    finally:
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="pgbench threads (-j)")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--tasks", type=int, default=60_000)
    ap.add_argument(
        "--pg", default=os.environ.get("MEDLABEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = ap.parse_args()
    if shutil.which("pgbench") is None:
        print("skipped: pgbench is not installed (Debian: postgresql-client)")
        return
    base = make_url(normalize_database_url(args.pg))
    name = f"medlabel_ceiling_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory() as tmp:
            pid, lo, hi = _fill(url, Path(tmp) / "home", args.tasks, args.clients)
            script = Path(tmp) / "cycle.sql"
            script.write_text(
                f"\\set pid {pid}\n\\set uid {lo} + :client_id % {hi - lo + 1}\n" + CLAIM + SUBMIT
            )
            u = make_url(url)
            env = dict(os.environ, PGPASSWORD=u.password or "")
            cmd = [
                "pgbench", "-n", "-M", "prepared", "-c", str(args.clients), "-j", str(args.threads),
                "-T", str(args.seconds), "-f", str(script),
                "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres", name,
            ]  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            print(out.stdout[-1500:], out.stderr[-1500:], sep="\n")
            with create_engine(url).connect() as conn:
                dup = conn.execute(
                    text("SELECT count(*) FROM (SELECT id FROM tasks WHERE claim_count > 1) x")
                ).scalar()
                done = conn.execute(text("SELECT count(*) FROM tasks WHERE state = 'done'")).scalar()
            print(f"cycles (claim + submit) done: {done}; tasks claimed more than once: {dup}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
