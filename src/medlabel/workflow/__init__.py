"""Pure workflow rules: stages and decisions, who may act, error records, sampling and gold scoring.

No database, no HTTP; the workflow service (``service.py``, written by the lead) stores the
history and calls these functions. See ``docs/workflow.md``.
"""

from medlabel.workflow.errors_taxonomy import (
    DEFAULT_CATEGORIES,
    ErrorLocation,
    ErrorRecord,
    ErrorTaxonomy,
    Severity,
    check_records,
)
from medlabel.workflow.gold import GoldScore, score_answers, score_gold, score_masks, score_objects
from medlabel.workflow.rules import (
    HistoryEvent,
    Transition,
    annotator_of,
    can_act,
    check_decision,
    decide,
    lease_expired,
    lease_expires_at,
    replay,
    require_can_act,
    reviewer_of,
    touched_by,
    why_cannot_act,
)
from medlabel.workflow.sampling import (
    assign_overlap,
    choose_auditor,
    select_audit_sample,
    select_overlap_items,
    share,
    should_serve_gold,
)
from medlabel.workflow.stages import (
    ALLOWED_DECISIONS,
    REJECTIONS,
    Decision,
    Stage,
    WorkflowConfig,
    allowed_decisions,
    next_stage,
)

__all__ = [
    "ALLOWED_DECISIONS",
    "DEFAULT_CATEGORIES",
    "REJECTIONS",
    "Decision",
    "ErrorLocation",
    "ErrorRecord",
    "ErrorTaxonomy",
    "GoldScore",
    "HistoryEvent",
    "Severity",
    "Stage",
    "Transition",
    "WorkflowConfig",
    "allowed_decisions",
    "annotator_of",
    "assign_overlap",
    "can_act",
    "check_decision",
    "check_records",
    "choose_auditor",
    "decide",
    "lease_expired",
    "lease_expires_at",
    "next_stage",
    "replay",
    "require_can_act",
    "reviewer_of",
    "score_answers",
    "score_gold",
    "score_masks",
    "score_objects",
    "select_audit_sample",
    "select_overlap_items",
    "share",
    "should_serve_gold",
    "touched_by",
    "why_cannot_act",
]
