"""The web page at ``/`` in a real browser (Debian's chromium, driven by playwright) over the real
stack: upload three photos, follow the job, see the head, move a slider, download the GLB; refused
photos; "My avatars" with a token on a service that requires one; a phone-sized screen.

WebGL runs in software (SwiftShader). Screenshots go to ``bench/out/web/``.
"""
from __future__ import annotations

import io
import json
import re
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from service_stack import LocalStack, start_api

from api import create_app
from api.auth import mint_token
from bench.photos import avatar_views
from jobs import localstack

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / "bench" / "out" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
    # Chromium's own background connections (updates, sync, …) have nowhere to go here.
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
VIEWS = ("front", "left", "right")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing, so the web page cannot be tested: install Debian's chromium "
                    "(`apt-get install chromium` as root; `make test` does it when run as root).")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Three real photos: the astronaut from the front, as the left view, and mirrored as the right."""
    return avatar_views(512)


@pytest.fixture(scope="module")
def auth_api(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalStack]]:
    """A second API process over the same Redis, store and worker, with REQUIRE_AUTH=true."""
    settings = stack.settings.replace(require_auth=True, port=localstack.free_port())
    processes: list = []
    try:
        base_url = start_api(settings, tmp_path_factory.mktemp("auth-api"), processes)
        yield base_url, stack
    finally:
        for process in processes:
            localstack.stop(process)


@dataclass
class Browsing:
    """One page in a fresh browser context, and the errors it logged."""

    page: object
    base_url: str
    phone: bool = False
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str, full_page: bool = True) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        if full_page and self.phone:
            # Playwright's full-page capture drops the touch emulation (the page would be drawn
            # as on a desktop): make the viewport as tall as the page instead.
            viewport = self.page.viewport_size
            height = self.page.evaluate("() => document.documentElement.scrollHeight")
            self.page.set_viewport_size({"width": viewport["width"], "height": height})
            self.page.screenshot(path=str(path))
            self.page.set_viewport_size(viewport)
        else:
            self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def refusals(self) -> list[str]:
        """The browser's own log lines for answers >= 400 (it logs every one, even those the page
        expects and handles); the rest of ``errors`` must stay empty."""
        return [e for e in self.errors if "Failed to load resource: the server responded with a status of" in e]

    def unexpected_errors(self, allowed_statuses: tuple[int, ...] = ()) -> list[str]:
        allowed = tuple(f"status of {status} " for status in allowed_statuses)
        return [e for e in self.errors if not (e in self.refusals() and any(a in e for a in allowed))]


@contextmanager
def browsing(browser, base_url: str, viewport: dict[str, int] = DESKTOP, phone: bool = False) -> Iterator[Browsing]:
    context = browser.new_context(viewport=viewport, accept_downloads=True, is_mobile=phone, has_touch=phone,
                                  device_scale_factor=2 if phone else 1)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    session = Browsing(page, base_url, phone)
    page.on("console", lambda message: message.type == "error" and session.errors.append(
        f"console: {message.text} at {message.location.get('url')}"))
    page.on("pageerror", lambda error: session.errors.append(f"page error: {error}"))
    try:
        page.goto(base_url + "/")
        page.wait_for_selector("html.app-ready")
        yield session
    finally:
        context.close()


def choose_photos(session: Browsing, photos: dict[str, bytes], names: dict[str, str] | None = None,
                  drop: tuple[str, ...] = ()) -> None:
    """Put a photo in each slot: with the file picker, or by dropping it on the slot (``drop``)."""
    page = session.page
    for view, data in photos.items():
        name = (names or {}).get(view, f"{view}.jpg")
        if view in drop:
            page.evaluate("""([view, name, bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'}));
                const target = document.querySelector(`[data-drop="${view}"]`);
                for (const type of ['dragenter', 'dragover', 'drop']) {
                    target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
                }
            }""", [view, name, list(data)])
        else:
            page.set_input_files(f"#{view}-file", {"name": name, "mimeType": "image/jpeg", "buffer": data})


def wait_for_message(session: Browsing, view: str, pattern: str) -> str:
    locator = session.page.locator(f"#{view}-message")
    locator.filter(has_text=re.compile(pattern)).wait_for()
    return locator.inner_text()


def canvas_pixels(session: Browsing) -> np.ndarray:
    """The viewer's canvas as an RGB array, after the frames already asked for are drawn."""
    session.page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    png = session.page.locator("#viewer-canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def changed(before: np.ndarray, after: np.ndarray, threshold: int = 24) -> np.ndarray:
    return np.abs(after - before).max(axis=-1) > threshold


def glb_target_names(glb: bytes) -> list[str]:
    json_length = struct.unpack_from("<I", glb, 12)[0]
    document = json.loads(glb[20:20 + json_length])
    return [name for mesh in document["meshes"] for name in mesh.get("extras", {}).get("targetNames", [])]


# Run in the page: every visible control has a name, and visible text has a contrast of at least
# 4.5:1 against the colour behind it (3:1 for large text), as WCAG 2 AA asks; disabled controls
# are exempt.
ACCESSIBILITY_AUDIT = """() => {
  const problems = [];
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const describe = (el) => el.outerHTML.slice(0, 90);
  for (const el of document.querySelectorAll('button, input, select, textarea, a[href], [tabindex]')) {
    if (!visible(el) || el.type === 'hidden') continue;
    const name = (el.labels && [...el.labels].map((l) => l.textContent).join(' ').trim())
      || el.getAttribute('aria-label') || (el.getAttribute('aria-labelledby') || '').split(' ')
        .map((id) => document.getElementById(id)?.textContent || '').join(' ').trim()
      || (['BUTTON', 'A'].includes(el.tagName) && el.textContent.trim());
    if (!name) problems.push(`no accessible name: ${describe(el)}`);
  }
  const rgba = (css) => (css.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const color = rgba(getComputedStyle(node).backgroundColor);
      if (color.length === 3 || color[3] === 1) return color.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const checked = new Set();
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || checked.has(el) || !visible(el) || el.closest(':disabled')) continue;
    checked.add(el);
    const style = getComputedStyle(el);
    const [l1, l2] = [luminance(rgba(style.color)), luminance(background(el))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)}: ${describe(el)}`);
  }
  return problems;
}"""


def check_accessibility(session: Browsing) -> None:
    assert session.page.evaluate(ACCESSIBILITY_AUDIT) == []


def make_avatar_through_the_page(session: Browsing) -> str:
    """Click the submit button and wait until the job has completed and the head is shown; returns its id."""
    page = session.page
    with page.expect_response(lambda r: r.url.endswith("/api/avatar/generate")) as answer:
        page.click("#submit")
    avatar_id = answer.value.json()["data"]["avatarId"]
    page.wait_for_selector('#viewer[data-state="ready"]')
    assert page.locator("#progress-stage").inner_text().startswith("Done")
    return avatar_id


def test_upload_follow_view_and_download(browser, stack: LocalStack, photos: dict[str, bytes], validate_gltf) -> None:
    with browsing(browser, stack.base_url) as session:
        page = session.page
        assert page.locator("#submit").is_disabled()
        # By keyboard alone: tab to the front slot's button, open the file chooser with Enter.
        # (A listener turns on playwright's file-chooser interception, which it does not wait
        # for: turned on here, it is on before Enter is pressed.)
        page.on("filechooser", lambda chooser: None)
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.dataset.pick") == "front":
                break
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files({"name": "front.jpg", "mimeType": "image/jpeg", "buffer": photos["front"]})
        wait_for_message(session, "front", "Ready")
        choose_photos(session, {"left": photos["left"], "right": photos["right"]}, drop=("left",))
        for view in VIEWS:
            assert "JPEG, 512×512" in wait_for_message(session, view, "Ready")
            assert page.locator(f'.slot[data-view="{view}"] img.thumb').is_visible()
        assert page.locator("#submit").is_enabled()
        session.shot("upload-ready.png")

        # Hold the GLB back until the empty stage has been photographed.
        held = []
        page.route("**/api/avatar/download/**", lambda route: held.append(route))
        with page.expect_response(lambda r: r.url.endswith("/api/avatar/generate")) as answer:
            page.click("#submit")
        avatar_id = answer.value.json()["data"]["avatarId"]
        page.wait_for_selector('#viewer[data-state="loading"]')
        for _ in range(500):
            if held:
                break
            page.wait_for_timeout(20)
        assert held, "the page did not ask for the GLB"
        assert page.locator("#progress-stage").inner_text() == "Done: your avatar is ready"
        assert page.locator("#progress-bar").evaluate("bar => bar.value") == 1
        assert page.locator("#progress-timings dt", has_text="Total").count() == 1
        assert page.locator("#progress-warnings").is_hidden()
        empty = canvas_pixels(session)
        held[0].continue_()
        page.unroute("**/api/avatar/download/**")
        page.wait_for_selector('#viewer[data-state="ready"]')
        head = canvas_pixels(session)
        session.shot("viewer.png")

        # The head: a solid region in the middle of the stage that the empty stage does not have.
        inside = empty[10:-10, 10:-10].reshape(-1, 3)  # the stage's corners are rounded
        assert len(np.unique(inside, axis=0)) == 1, "the empty stage should be the background alone"
        covered = changed(empty, head)
        rows, cols = np.nonzero(covered)
        height, width = covered.shape
        assert covered.mean() > 0.15, f"the head covers only {covered.mean():.1%} of the stage"
        assert abs(cols.mean() / width - 0.5) < 0.1 and abs(rows.mean() / height - 0.5) < 0.15
        skin = head[covered].mean(axis=0)
        assert skin[0] > skin[2], f"the head's mean colour {skin} is not skin-like (red above blue)"

        # Sliders: exactly the morph targets the GLB names, whichever they are.
        glb = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=10).content
        sliders = page.locator("[data-morph]").evaluate_all("inputs => inputs.map(i => i.dataset.morph)")
        assert sorted(sliders) == sorted(set(glb_target_names(glb)))
        assert "jawOpen" in sliders
        page.get_by_label("jawOpen", exact=True).fill("1")
        open_jaw = canvas_pixels(session)
        session.shot("viewer-jaw-open.png")
        moved = changed(head, open_jaw)
        assert moved.mean() > 0.01, f"jawOpen=1 changed only {moved.mean():.2%} of the picture"
        assert np.nonzero(moved)[0].mean() > rows.mean(), "the jaw opened above the middle of the head"
        page.get_by_role("button", name="Smile").click()
        assert page.get_by_label("jawOpen", exact=True).input_value() == "0"
        smile = canvas_pixels(session)
        assert changed(open_jaw, smile).mean() > 0.01
        assert page.locator("#features dt", has_text="Face shape").count() == 1
        page.focus("#viewer-canvas")
        page.keyboard.press("ArrowLeft")
        turned = canvas_pixels(session)
        assert changed(smile, turned).mean() > 0.03, "the arrow key did not turn the head"
        session.shot("viewer-turned.png", full_page=False)
        page.select_option("#background", label="Dark")
        page.fill("#light", "2")
        dark = canvas_pixels(session)
        background = np.array([0x2B, 0x2F, 0x36], np.int16)
        assert (dark[20, 20] == background).all()
        head_in_both = changed(empty, turned) & changed(np.broadcast_to(background, dark.shape), dark)
        assert dark[head_in_both].mean() > turned[head_in_both].mean() + 10, "more light did not brighten the head"
        session.shot("viewer-dark.png", full_page=False)
        check_accessibility(session)

        with page.expect_download() as download:
            page.click("#download")
        saved = Path(download.value.path()).read_bytes()
        assert re.fullmatch(rf"avatar_{avatar_id}_\d+\.glb", download.value.suggested_filename)
        assert saved == glb
        report = validate_gltf(saved)
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
        assert session.errors == []


def test_refused_photos_show_their_message_beside_the_photo(browser, stack: LocalStack, photos: dict[str, bytes],
                                                            coffee_jpeg: bytes) -> None:
    small = io.BytesIO()
    Image.new("RGB", (200, 300), (120, 90, 60)).save(small, "PNG")
    with browsing(browser, stack.base_url) as session:
        page = session.page
        # Refused in the page: too small, not an image at all.
        page.set_input_files("#front-file", {"name": "tiny.png", "mimeType": "image/png", "buffer": small.getvalue()})
        page.set_input_files("#left-file", {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text"})
        assert wait_for_message(session, "front", "too small") == \
            "tiny.png: Image too small. Minimum size is 224x224 pixels (this one is 200x300)."
        assert wait_for_message(session, "left", "Unsupported") == \
            "notes.jpg: Unsupported file type: only JPEG, PNG and WebP images are accepted."
        assert page.locator('.slot[data-view="front"]').get_attribute("class") == "slot invalid"
        assert page.locator("#submit").is_disabled()

        # Refused by the service: a JPEG cut short passes the page's header checks.
        cut = photos["left"][: len(photos["left"]) // 2]
        choose_photos(session, {"front": photos["front"], "left": cut, "right": photos["right"]},
                      names={"left": "cut-short.jpg"})
        wait_for_message(session, "left", "Ready")
        with page.expect_response(lambda r: r.url.endswith("/api/avatar/generate")) as answer:
            page.click("#submit")
        refusal = answer.value.json()
        assert answer.value.status == 400
        left_error = refusal["details"][1]["error"]
        assert wait_for_message(session, "left", "cut-short.jpg: ") == f"cut-short.jpg: {left_error}"
        assert page.locator("#front-message").inner_text().endswith("Ready.")
        assert page.locator("#form-message").inner_text().startswith(refusal["error"])
        assert page.locator("#progress").is_hidden()
        session.shot("refused.png")

        # Accepted, then failed by the worker: a front photo without a face.
        choose_photos(session, {"front": coffee_jpeg, "left": photos["left"]})
        wait_for_message(session, "left", "Ready")
        page.click("#submit")
        failure = page.locator("#progress-failure")
        failure.wait_for()
        assert page.locator("#failure-message").inner_text() == "front: no face found"
        assert page.locator("#failure-advice").inner_text().startswith("Take the front photo again")
        assert page.locator("#progress-stage").inner_text().startswith("The avatar could not be made")
        assert page.locator("#front-message").inner_text() == \
            "front: no face found. Choose another front photo."
        assert page.locator("#viewer").is_hidden() and page.locator("#submit").is_disabled()
        session.shot("failed.png")
        assert len(session.refusals()) == 1 and "/api/avatar/generate" in session.refusals()[0]
        assert session.unexpected_errors(allowed_statuses=(400,)) == []


def test_my_avatars_with_a_token_when_the_service_requires_one(browser, auth_api, photos: dict[str, bytes],
                                                               coffee_jpeg: bytes) -> None:
    base_url, stack = auth_api
    user = f"web-{uuid.uuid4().hex[:8]}"
    token = mint_token(stack.settings, user, timedelta(hours=1))
    with browsing(browser, base_url) as session:
        page = session.page
        choose_photos(session, photos)
        wait_for_message(session, "right", "Ready")
        page.click("#submit")
        form_message = page.locator("#form-message")
        form_message.filter(has_text="signed-in user").wait_for()
        assert "Save your access token" in form_message.inner_text()

        page.click('a[data-tab="mine"]')
        page.fill("#token", token)
        page.get_by_role("button", name="Save token").click()
        page.locator("#list-message", has_text="no avatars yet").wait_for()

        page.click('a[data-tab="create"]')
        first = make_avatar_through_the_page(session)
        choose_photos(session, {"left": coffee_jpeg})  # no face: the head is made without the left view
        wait_for_message(session, "left", "Ready")
        second = make_avatar_through_the_page(session)
        warnings = page.locator("#progress-warnings")
        assert warnings.is_visible() and "The left photo was not used" in warnings.inner_text()
        session.shot("warning.png")

        # Five more, recorded straight in the store (never queued), fill a second page.
        extra = [str(uuid.uuid4()) for _ in range(5)]
        for avatar_id in extra:
            stack.store.create(avatar_id, owner=user, uploads={})
        page.click('a[data-tab="mine"]')
        page.locator("#page-label", has_text="Page 1 of 2").wait_for()
        cards = page.locator(".avatar-card")
        assert cards.count() == 6
        page.locator(".avatar-card .preview img").wait_for()  # the one completed avatar on this page
        ids = cards.evaluate_all("cards => cards.map(c => c.dataset.avatarId)")
        assert set(ids[:5]) == set(extra) and ids[5] == second  # newest first
        session.shot("my-avatars.png")
        check_accessibility(session)
        page.click("#next-page")
        page.locator("#page-label", has_text="Page 2 of 2").wait_for()
        assert cards.evaluate_all("cards => cards.map(c => c.dataset.avatarId)") == [first]
        thumbnail = page.locator(".avatar-card .preview img")
        thumbnail.wait_for()
        pixels = np.asarray(Image.open(io.BytesIO(thumbnail.screenshot())).convert("L"))
        assert pixels.std() > 20, "the thumbnail is blank"

        with page.expect_download() as download:
            page.locator(".avatar-card").get_by_role("button", name="Download").click()
        assert Path(download.value.path()).read_bytes()[:4] == b"glTF"
        page.locator(".avatar-card").get_by_role("button", name="Open").click()
        page.wait_for_selector('#viewer[data-state="ready"]')
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator(".avatar-card").get_by_role("button", name="Delete").click()
        page.locator("#list-message", has_text="Deleted").wait_for()
        assert page.locator("#viewer").is_hidden()  # the open avatar was the one deleted
        assert page.locator("#page-label").is_hidden()  # six left: one page
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base_url}/api/avatar/info/{first}", headers=bearer, timeout=5).status_code == 404
        assert session.refusals() and all("status of 401 " in e for e in session.refusals())
        assert session.unexpected_errors(allowed_statuses=(401,)) == []
    for avatar_id in [second, *extra]:
        requests.delete(f"{base_url}/api/avatar/{avatar_id}", headers=bearer, timeout=5)


def test_phone_width_has_no_horizontal_overflow(browser, auth_api, photos: dict[str, bytes]) -> None:
    base_url, stack = auth_api
    user = f"phone-{uuid.uuid4().hex[:8]}"
    token = mint_token(stack.settings, user, timedelta(hours=1))
    made = requests.post(f"{base_url}/api/avatar/generate", headers={"Authorization": f"Bearer {token}",
                                                                      "Prefer": "wait=30"},
                         files={view: (f"{view}.jpg", data, "image/jpeg") for view, data in photos.items()},
                         timeout=60)
    assert made.status_code == 200, made.text

    def overflow() -> int:
        return session.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")

    with browsing(browser, base_url, PHONE, phone=True) as session:
        page = session.page
        # A phone offers its camera too.
        assert page.locator('[data-camera="front"]').is_visible()
        assert page.locator("#front-camera").get_attribute("capture") == "user"
        long_name = "a-very-long-photo-file-name-straight-from-the-phone-camera-roll-IMG_20240101_123456789.jpg"
        choose_photos(session, photos, names={view: long_name for view in VIEWS})
        wait_for_message(session, "right", "Ready")
        assert overflow() == 0
        session.shot("phone-upload.png")
        page.click('a[data-tab="mine"]')
        page.fill("#token", token)
        page.get_by_role("button", name="Save token").click()
        page.locator(".avatar-card .preview img").wait_for()
        assert overflow() == 0
        session.shot("phone-my-avatars.png")
        page.locator(".avatar-card").get_by_role("button", name="Open").click()
        page.wait_for_selector('#viewer[data-state="ready"]')
        assert overflow() == 0
        assert page.locator("#viewer-canvas").bounding_box()["width"] <= PHONE["width"]
        check_accessibility(session)
        session.shot("phone-viewer.png")
        assert session.errors == []


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"<{tag} {name}=…>" for name in names if name == "style" or name.startswith("on")]


def test_page_and_assets_allow_only_the_services_own_origin(stack: LocalStack) -> None:
    page = requests.get(stack.url("/"), timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    for sources in policy.values():
        assert set(sources.split()) <= {"'self'", "'none'", "blob:"}, sources
    finder = _InlineFinder()
    finder.feed(page.text)
    assert finder.inline == []
    for asset in re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text):
        answer = requests.get(stack.url(asset), timeout=5)
        assert answer.status_code == 200, asset
        assert answer.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]


def test_reloading_the_page_uses_none_of_the_clients_rate_limit(stack: LocalStack) -> None:
    # Counted in the stack's Redis; a limit of its own keeps these counts apart from other tests'.
    client = create_app(stack.settings.replace(rate_limit_default="3 per 15 minutes")).test_client()
    for _ in range(4):
        assert client.get("/").status_code == 200
        assert client.get("/assets/style.css").status_code == 200
    status = f"/api/avatar/jobs/{uuid.uuid4()}"
    assert [client.get(status).status_code for _ in range(4)] == [404, 404, 404, 429]
