"""Demo content for labeling: the example chest X-ray schema, a workflow and tasks for the items."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.demo import DEMO_HOOKS
from medlabel.labeling import schema_service, task_service
from medlabel.labeling.common import WORKFLOW_KEY
from medlabel.storage.models import Project
from medlabel.workflow import WorkflowConfig

__all__ = ["labeling_demo", "DEMO_WORKFLOW", "EXAMPLE_SCHEMAS", "find_example_schema"]

EXAMPLE_SCHEMAS = Path(__file__).resolve().parents[1] / "annotations" / "examples"

# one annotator in the demo team, so no overlap items (they need two)
DEMO_WORKFLOW = WorkflowConfig(review=True, validate=True, audit_fraction=0.1)


def find_example_schema(name: str = "chest_xray.yaml") -> Path | None:
    """One of the example schemas shipped in the package (``medlabel/annotations/examples/``)."""
    candidate = EXAMPLE_SCHEMAS / name
    return candidate if candidate.is_file() else None


def labeling_demo(session: Session, home: Path, project_id: int, admin: Actor) -> list[str]:
    project = session.get(Project, project_id)
    if project is None:
        return []
    lines: list[str] = []
    if schema_service.current_schema(session, project_id) is None:
        path = find_example_schema()
        if path is None:
            return [f"(labeling) {EXAMPLE_SCHEMAS / 'chest_xray.yaml'} not found: no label schema loaded"]
        schema, _ = schema_service.put_schema(
            session, admin, project, schema=schema_service.parse_schema_document(path.read_text())
        )
        lines.append(f"label schema {schema.name!r} v{schema.version} loaded into {project.name!r}")
    if not (project.settings or {}).get(WORKFLOW_KEY):
        task_service.set_workflow(
            session, admin, project, config=DEMO_WORKFLOW, error_categories=["laterality"]
        )
    out = task_service.sync_tasks(session, admin, project, seed=1)
    if out["tasks"]:
        lines.append(f"{out['tasks']} annotation task(s) created for {out['items']} item(s)")
    return lines


DEMO_HOOKS.append(labeling_demo)
