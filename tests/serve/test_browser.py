"""The web page in a real browser (Playwright driving Debian's chromium): draw a stroke, see a
prediction, send a correction, find it in the store; Clear; the empty pad; wording that fits
the model; and /docs with no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnlab.serve.app import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (make install adds it)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` could not run here",
                allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, serving):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("browser-store") / "feedback.db"
    app = create_app(ServeSettings(checkpoint="default", engine="torch",
                                   feedback_url=f"sqlite:///{db}"))
    with serving(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory, serving):  # type: ignore[no-untyped-def]
    """A model that is not a digit model: three classes of 32x32 images, resized."""
    from cnnlab.config import resolve_config
    from cnnlab.training.loop import fit
    from synth import write_image_folder

    root = tmp_path_factory.mktemp("browser-other")
    write_image_folder(root / "data" / "train", n_per_class=8, num_classes=3, size=32,
                       classes=["cat", "dog", "owl"])
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(root / "data"), "val_fraction": 0.0,
                                   "preprocess": "resize", "image_size": 32},
                          "train": {"epochs": 1, "batch_size": 16, "threads": 1}})
    fit(cfg, out_dir=root / "run", progress=False)
    app = create_app(ServeSettings(checkpoint=str(root / "run"), engine="torch",
                                   feedback_url=f"sqlite:///{root / 'feedback.db'}"))
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):  # type: ignore[no-untyped-def]
    """A fresh page on ``url``/ with the model's wording filled in; also returns the list the
    page's requests are appended to."""
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('heading').textContent !== 'cnnlab'",
                           timeout=10_000)
    return page, requests


def _lit(page) -> int:  # type: ignore[no-untyped-def]
    """Pixels of the 'what the model saw' canvas brighter than mid-grey."""
    return page.evaluate("""() => {
        const c = document.getElementById('seen');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++;
        return n; }""")


def _boxes(page) -> dict:  # type: ignore[no-untyped-def]
    return {sel: page.locator(sel).bounding_box()
            for sel in ("#pad", "#predict", "#clear", "#drop", "#seen", "#result")}


def test_draw_predict_and_correct(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, app = site
    page, _ = _open(browser, url)
    try:
        before = _boxes(page)
        box = page.locator("#pad").bounding_box()
        assert box is not None
        # a vertical stroke down the middle: a "1"
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + 50)
        page.mouse.down()
        for i in range(1, 19):
            page.mouse.move(x, box["y"] + 50 + 10 * i)
        page.mouse.up()
        page.click("#predict")
        page.wait_for_selector("#top tr", timeout=10_000)
        rows = page.locator("#top tr")
        assert rows.count() == 3
        predicted = rows.nth(0).locator("td").nth(0).inner_text()
        assert "Prediction" in page.inner_text("#status")
        assert predicted == "1"
        # the model's input is shown
        assert _lit(page) > 10
        # nothing moved when the answer came
        assert _boxes(page) == before
        # correct it to a 7 and find the correction in the store
        page.select_option("#label", "7")
        page.click("#correct")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('Thank you')",
            timeout=10_000)
        # Clear empties the pad and the last result, and moves nothing either
        page.click("#clear")
        assert page.locator("#top tr").count() == 0
        assert page.inner_text("#status") == ""
        assert _lit(page) == 0
        assert not page.locator("#confirm").is_visible()
        assert _boxes(page) == before
    finally:
        page.close()
    rows = app.state.service.store.rows()
    assert len(rows) == 1 and rows[0].label == "7" and rows[0].predicted == predicted


def test_an_empty_pad_gets_a_short_message_in_place(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, _ = site
    page, requests = _open(browser, url)
    try:
        before = _boxes(page)
        page.click("#predict")
        message = page.inner_text("#status")
        assert message == "Draw a digit first, or upload a photo of one."
        assert "error" not in page.get_attribute("#status", "class")
        # no request, so no server wording (field names, library messages) can show
        assert not any("/v1/predict" in r for r in requests)
        assert _boxes(page) == before
        # after a drawing and Clear, the pad is empty again
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.down()
        page.mouse.move(box["x"] + 120, box["y"] + 200)
        page.mouse.up()
        page.click("#clear")
        page.click("#predict")
        assert page.inner_text("#status") == message
        assert not any("/v1/predict" in r for r in requests)
    finally:
        page.close()


def test_the_wording_fits_the_model(site, other_site, browser) -> None:  # type: ignore[no-untyped-def]
    page, _ = _open(browser, site[0])
    try:
        assert page.inner_text("#heading") == "Draw a digit"
        assert "28x28" in page.inner_text("#intro")
        assert page.locator("#label option").all_inner_texts() == [str(d) for d in range(10)]
    finally:
        page.close()
    page, _ = _open(browser, other_site)
    try:
        assert page.inner_text("#heading") == "Draw or upload an image"
        intro = page.inner_text("#intro")
        assert "32x32" in intro and "28x28" not in intro and "digit" not in intro
        assert "cat, dog, owl" in intro
        assert "digit" not in page.title()
        assert page.locator("#label option").all_inner_texts() == ["cat", "dog", "owl"]
        size = page.evaluate("[document.getElementById('seen').width, "
                             "document.getElementById('seen').height]")
        assert size == [32, 32]
        page.click("#predict")
        assert page.inner_text("#status") == "Draw something first, or upload an image."
    finally:
        page.close()


def test_docs_load_with_no_network(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, _ = site
    context = browser.new_context()
    seen: list[str] = []
    blocked: list[str] = []

    def route(r) -> None:  # type: ignore[no-untyped-def]
        seen.append(r.request.url)
        if r.request.url.startswith(url + "/"):
            r.continue_()
        else:  # anything that would leave 127.0.0.1
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    try:
        page.goto(url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/v1/predict", "/v1/feedback", "/v1/admin/reload"} <= set(paths)
        # the request models are documented
        page.wait_for_selector("section.models", timeout=10_000)
        assert "FeedbackRequest" in page.inner_text("section.models")
    finally:
        context.close()
    assert blocked == []
    assert seen and all(u.startswith("http://127.0.0.1:") for u in seen)
    assert any(u.endswith("/static/docs/swagger-ui-bundle.js") for u in seen)


def _red(page) -> int:  # type: ignore[no-untyped-def]
    """Pixels of the 'what the model saw' canvas tinted red (the attribution overlay)."""
    return page.evaluate("""() => {
        const c = document.getElementById('seen');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 1] + 60) n++;
        return n; }""")


def test_why_overlays_the_attribution_on_the_input(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, _ = site
    page, requests = _open(browser, url)
    try:
        assert page.locator("#why").is_disabled()  # nothing to explain yet
        before = _boxes(page)
        box = page.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + 50)
        page.mouse.down()
        for i in range(1, 19):
            page.mouse.move(x, box["y"] + 50 + 10 * i)
        page.mouse.up()
        page.click("#predict")
        page.wait_for_selector("#top tr", timeout=10_000)
        assert _red(page) == 0 and _lit(page) > 10
        page.check("#why")
        page.wait_for_function("document.getElementById('seen').dataset.why === 'on'",
                               timeout=10_000)
        assert any(r.endswith("/v1/explain") for r in requests)
        red = _red(page)
        assert red > 5, red
        assert _boxes(page) == before
        # off again: the plain input comes back
        page.uncheck("#why")
        page.wait_for_function("document.getElementById('seen').dataset.why === 'off'",
                               timeout=10_000)
        assert _red(page) == 0 and _lit(page) > 10
        # Clear: nothing shown and nothing to explain
        page.click("#clear")
        assert page.locator("#why").is_disabled() and _lit(page) == 0
    finally:
        page.close()
