"""Log in through the real page in headless Chromium and see the home page with projects."""

from __future__ import annotations

import pytest

from ..foundation.helpers import PASSWORD, make_project, make_user

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_login_then_home_lists_projects(live_server, browser, runtime, tmp_path):
    make_user(runtime, "ann")
    make_project(runtime, "Chest X-ray triage", {"ann": ["annotator"]})
    make_project(runtime, "Hidden pathology study")
    page = browser.new_page()
    page.goto(live_server + "/")
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#username", "ann")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error", state="visible")
    assert "invalid username or password" in page.inner_text("#login-error")

    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#home-view", state="visible")
    items = page.locator("#project-list li")
    assert items.count() == 1
    assert "Chest X-ray triage" in items.first.inner_text()
    assert "annotator" in items.first.inner_text()
    assert "Hidden" not in page.content()
    assert "ann" in page.inner_text("#whoami")
    cookies = page.context.cookies()
    assert any(c["name"] == "medlabel_session" and c["httpOnly"] for c in cookies)
    assert page.evaluate("document.cookie") == ""  # the session is invisible to scripts
    page.screenshot(path=str(tmp_path / "home.png"))

    page.reload()  # the session survives a reload
    page.wait_for_selector("#home-view", state="visible")
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    page.reload()
    page.wait_for_selector("#login-form", state="visible")
