"""The OpenAPI document at /api/openapi.json is valid OpenAPI 3.1, and the reference page at /docs
shows every operation in a real browser (Debian's chromium) under the page's strict
Content-Security-Policy, with nothing loaded from elsewhere. Screenshot: bench/out/web/docs.png."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate
from service_stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOT = REPO_ROOT / "bench" / "out" / "web" / "docs.png"
CHROMIUM = Path("/usr/bin/chromium")


def test_the_openapi_document_is_valid_openapi_3_1(stack: LocalStack) -> None:
    response = requests.get(stack.url("/api/openapi.json"), timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises with the offending path when the document is not valid


def test_the_reference_page_shows_every_operation_under_a_strict_policy(stack: LocalStack) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`).")
    from playwright.sync_api import sync_playwright

    document = requests.get(stack.url("/api/openapi.json"), timeout=5).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    page_response = requests.get(stack.url("/docs"), timeout=5)
    policy = page_response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "script-src 'self'" in policy and "style-src 'self'" in policy

    problems: list[str] = []
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("request", lambda request: elsewhere.append(request.url)
                    if not request.url.startswith((stack.base_url, "data:", "blob:")) else None)
            page.goto(stack.url("/docs"))
            page.wait_for_selector(".opblock", timeout=30_000)
            shown = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT))
        finally:
            browser.close()
    assert shown == operations, (shown, operations)
    assert "Avatar service" in title
    assert not problems, problems  # a blocked style or script is reported here
    assert not elsewhere, elsewhere
