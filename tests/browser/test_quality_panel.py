"""The home page shows this week's agreement against the target and the alert with the annotators."""

from __future__ import annotations

from datetime import timedelta

import pytest

from medlabel import clock

from ..foundation.helpers import PASSWORD
from ..quality.test_quality_service import build_project

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_manager_sees_kappa_below_target(live_server, browser, runtime):
    now = clock.now()
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    build_project(runtime, 30, base=monday + (now - monday) / 2, step=timedelta(seconds=1))
    page = browser.new_page()
    page.goto(live_server + "/")
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#username", "boss")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    kpi = page.wait_for_selector(".kpi[data-metric=kappa]")
    assert "bad" in (kpi.get_attribute("class") or "")
    assert "target 0.95" in kpi.inner_text()
    alert = page.wait_for_selector(".alert")
    assert "ann1" in alert.inner_text() and "ann2" in alert.inner_text()
