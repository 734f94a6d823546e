"""Built-in job kinds."""

from __future__ import annotations

import time
from typing import Any

from medlabel.errors import InvalidInput
from medlabel.jobs.registry import JobContext, job_kind


@job_kind("system.selftest")
def selftest(ctx: JobContext) -> dict[str, Any]:
    """Walk through ``steps`` steps, reporting progress: proves a worker is consuming the queue."""
    steps = int(ctx.params.get("steps", 5))
    delay = float(ctx.params.get("delay", 0.0))
    if not 1 <= steps <= 1000 or not 0 <= delay <= 10:
        raise InvalidInput(f"selftest wants 1–1000 steps and a 0–10 s delay, found {steps} and {delay}")
    for i in range(steps):
        if delay:
            time.sleep(delay)
        ctx.progress(100 * (i + 1) / steps, f"step {i + 1} of {steps}")
    return {"steps": steps}
