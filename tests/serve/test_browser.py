"""The web page in a real browser (Playwright driving Debian's chromium): draw a stroke, see a
prediction, send a correction, find it in the store."""

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


def test_draw_predict_and_correct(site) -> None:  # type: ignore[no-untyped-def]
    url, app = site
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
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
            lit = page.evaluate("""() => {
                const d = document.getElementById('seen').getContext('2d')
                    .getImageData(0, 0, 28, 28).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++;
                return n; }""")
            assert lit > 10
            # correct it to a 7 and find the correction in the store
            page.select_option("#label", "7")
            page.click("#correct")
            page.wait_for_function(
                "document.getElementById('status').textContent.includes('Thank you')",
                timeout=10_000)
        finally:
            browser.close()
    rows = app.state.store.rows()
    assert len(rows) == 1 and rows[0].label == "7" and rows[0].predicted == predicted
