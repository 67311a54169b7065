"""The web app in a real browser: Playwright drives Debian's headless Chromium against `spatialforge app`.

The app runs as its own process (the command's code path, ``--port 0``) and the test reads the URL it
prints. Screenshots go to ``$SPATIALFORGE_ARTIFACTS`` (when set) or the test's tmp_path. Without
Chromium the test skips, naming ``apt-get install -y chromium``, except where
``$SPATIALFORGE_REQUIRE_BROWSER`` is set: CI (.ci/run) installs Chromium and sets it, so there the test
runs or fails, never skips. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.app.conftest import zip_folder

pytest.importorskip("gradio")  # the dev extra installs it; without the demo extra there is no app to test
sync_api = pytest.importorskip("playwright.sync_api")

_SERVER = """
import sys
from spatialforge.cli.app import add_app_parser
from spatialforge.cli.options import Parser
parser = Parser(prog="spatialforge")
add_app_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(["app", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    message = "Chromium is not installed; the browser test needs Debian's: apt-get install -y chromium"
    if os.environ.get("SPATIALFORGE_REQUIRE_BROWSER"):  # CI (.ci/run) installs it: there the test never skips
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`spatialforge app --port 0` in a subprocess; yields its URL."""
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, "--port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            m = re.search(r"serving on (http://\S+)", log.read_text())
            if m:
                url = m.group(1)
            elif proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start (exit {proc.poll()}):\n{log.read_text()}")
            else:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def artifacts(tmp_path) -> Path:
    root = os.environ.get("SPATIALFORGE_ARTIFACTS")
    out = Path(root) / "app" if root else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _rows(page, elem_id: str) -> int:
    """Data rows of a Gradio table (it draws only the visible ones; the grid's aria-rowcount counts all + header)."""
    grid = page.locator(f"#{elem_id} [role=grid]")
    if grid.count() == 0:
        return 0
    return int(grid.get_attribute("aria-rowcount") or 1) - 1


def _wait_rows(page, elem_id: str, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _rows(page, elem_id) != n:
        if time.monotonic() > deadline:
            raise AssertionError(f"#{elem_id}: {_rows(page, elem_id)} rows, expected {n}")
        page.wait_for_timeout(200)


def test_app_in_chromium(server, artifacts, scene_folder, tmp_path):
    from spatialforge.app.handlers import analyse_scene, load_synthetic
    from spatialforge.io.scene_folder import load_scene

    exe = _chromium()
    expected = analyse_scene(load_synthetic(3, 0), "synthetic")
    uploaded = analyse_scene(load_scene(scene_folder), "upload")
    good_zip = zip_folder(scene_folder, tmp_path / "kitchen.zip")
    bad_zip = zip_folder(scene_folder, tmp_path / "broken.zip", drop=("camera.json",))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server)
            page.get_by_role("button", name="Show synthetic scene").wait_for()

            # a built-in synthetic scene: masks, depth, the 3D plot and both tables
            page.locator("#sf-index input").fill("3")
            page.get_by_role("button", name="Show synthetic scene").click()
            page.locator("#sf-plot .js-plotly-plot").wait_for()
            page.locator("#sf-overlay img").wait_for()
            page.locator("#sf-depth img").wait_for()
            _wait_rows(page, "sf-qa", len(expected.qa))
            _wait_rows(page, "sf-graph", len(expected.graph.objects))
            assert "synth_000003" in page.locator("#sf-status").inner_text()
            n_boxes = page.evaluate("() => document.querySelector('#sf-plot .js-plotly-plot').data"
                                    ".filter(t => t.name.startsWith('box ')).length")
            assert n_boxes == len(expected.graph.objects)
            page.screenshot(path=str(artifacts / "app_synthetic.png"), full_page=True)

            # an uploaded scene folder (zip): its own scene replaces the synthetic one
            page.locator("#sf-upload input[type=file]").set_input_files(str(good_zip))
            page.locator("#sf-status").get_by_text("scene folder kitchen.zip").wait_for()
            _wait_rows(page, "sf-qa", len(uploaded.qa))
            _wait_rows(page, "sf-graph", len(uploaded.graph.objects))
            page.locator("#sf-plot .js-plotly-plot").wait_for()
            page.locator("#sf-status").screenshot(path=str(artifacts / "app_upload_status.png"))

            # a bad upload: the loader's one-line reason, the server stays up
            page.get_by_role("button", name="Clear").first.click()
            page.locator("#sf-upload input[type=file]").set_input_files(str(bad_zip))
            reason = f"broken.zip: {scene_folder.name}/camera.json: missing file"
            page.locator("#sf-status").get_by_text(reason).wait_for()
            assert _rows(page, "sf-qa") == 0
            page.locator("#sf-status").screenshot(path=str(artifacts / "app_bad_upload.png"))

            # ask a question about the synthetic scene again
            page.get_by_role("button", name="Show synthetic scene").click()
            _wait_rows(page, "sf-qa", len(expected.qa))
            a, b = expected.graph.objects[:2]
            page.get_by_role("tab", name="Ask").click()
            page.locator("#sf-question textarea").fill(f"How far is #{a.id} from #{b.id}?")
            page.get_by_role("button", name="Ask").click()
            want = f"{float(((a.center - b.center) ** 2).sum() ** 0.5):.2f} m"
            page.locator("#sf-answer").get_by_text(want).wait_for()
            page.screenshot(path=str(artifacts / "app_ask.png"))
        finally:
            browser.close()
