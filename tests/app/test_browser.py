"""The web app in a real browser: Playwright drives Debian's headless Chromium against `spatialforge app`.

The app runs as its own process (the command's code path, ``--port 0``) with every model option: a tiny
random perception config (``--config``), a tiny random AffordanceCLIP checkpoint (``--afford-checkpoint``)
and a VLM (``--vlm``) that is a scripted OpenAI-compatible server on loopback in this process. The test
reads the URL the app prints. Screenshots go to ``$SPATIALFORGE_ARTIFACTS/app/`` (when set) or the
test's tmp_path. Without
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spatialforge.app.handlers import AppConfig
from tests.app.conftest import write_photo, zip_folder
from tests.eval.fake_openai_server import FakeOpenAIServer

pytest.importorskip("gradio")  # the dev extra installs it; without the demo extra there is no app to test
sync_api = pytest.importorskip("playwright.sync_api")

VLM_REPLY = "They are about 1.3 meters apart."

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
def vlm_server():
    """The VLM: a scripted OpenAI-compatible server on 127.0.0.1 that answers every question the same."""
    with FakeOpenAIServer(oracle=lambda text: VLM_REPLY) as fake:
        yield fake


@dataclass
class Server:
    url: str
    photo: Path  # a photo to upload
    photo_view: Any  # what the app's handlers make of it here (computed while the server starts)


@pytest.fixture(scope="module")
def server(tmp_path_factory, perception_config, afford_checkpoint, vlm_server):
    """`spatialforge app --port 0 --config ... --afford-checkpoint ... --vlm ...` in a subprocess."""
    from spatialforge.app.handlers import AppModels, analyse_scene, load_upload
    from spatialforge.perception.config import load_perception_config

    folder = tmp_path_factory.mktemp("app")
    log = folder / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    argv = ["--port", "0", "--config", str(perception_config), "--afford-checkpoint", str(afford_checkpoint),
            "--vlm", f"openai:fake-vlm@{vlm_server.base_url}", "--vlm-max-retries", "0", "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        photo = write_photo(folder / "desk.jpg")
        config = AppConfig(perception=load_perception_config(perception_config))
        photo_view = analyse_scene(*load_upload(photo, config, models=AppModels(config)))
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
        yield Server(url, photo, photo_view)
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


def _settled(page, timeout_s: float = 30) -> None:
    """Wait until no block is pending (Gradio fades pending outputs), so a screenshot shows the page at rest."""
    page.wait_for_function("() => document.querySelectorAll('.pending').length === 0", timeout=timeout_s * 1000)
    page.wait_for_timeout(400)  # the fade back to full opacity


def _plot_traces(page, elem_id: str, prefix: str) -> int:
    return page.evaluate(f"() => document.querySelector('#{elem_id} .js-plotly-plot').data"
                         f".filter(t => (t.name || '').startsWith('{prefix}')).length")


def test_app_in_chromium(server, artifacts, scene_folder, tmp_path, vlm_server):
    from spatialforge.app.handlers import analyse_scene, load_synthetic
    from spatialforge.io.scene_folder import load_scene

    exe = _chromium()
    expected = analyse_scene(load_synthetic(3, 0), "synthetic")
    uploaded = analyse_scene(load_scene(scene_folder), "upload")
    good_zip = zip_folder(scene_folder, tmp_path / "kitchen.zip")
    bad_zip = zip_folder(scene_folder, tmp_path / "broken.zip", drop=("camera.json",))
    (tmp_path / "scan.jpg").write_bytes(b"not an image at all")
    photo, photo_view = server.photo, server.photo_view
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server.url)
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
            assert _plot_traces(page, "sf-plot", "box ") == len(expected.graph.objects)
            _settled(page)
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

            # a photo through the (tiny) perception models: masks, depth, the 3D view and the tables
            page.get_by_role("button", name="Clear").first.click()
            page.locator("#sf-upload input[type=file]").set_input_files(str(photo))
            n = len(photo_view.graph.objects)
            page.locator("#sf-status").get_by_text(f"(photo desk.jpg): {n} objects measured").wait_for()
            _wait_rows(page, "sf-graph", n)
            _wait_rows(page, "sf-qa", len(photo_view.qa))
            page.locator("#sf-overlay img").wait_for()
            page.locator("#sf-depth img").wait_for()
            assert _plot_traces(page, "sf-plot", "box ") == n
            _settled(page)
            page.screenshot(path=str(artifacts / "app_photo.png"), full_page=True)

            # an image that cannot be read: its reason, as `spatialforge generate` records it
            page.get_by_role("button", name="Clear").first.click()
            page.locator("#sf-upload input[type=file]").set_input_files(str(tmp_path / "scan.jpg"))
            unreadable = "scan.jpg: cannot decode image (not a known image format)"
            page.locator("#sf-status").get_by_text(unreadable).wait_for()
            assert _rows(page, "sf-qa") == 0

            # ask about the synthetic scene: the scene graph's answer and, beside it, the VLM's, compared
            page.get_by_role("button", name="Show synthetic scene").click()
            _wait_rows(page, "sf-qa", len(expected.qa))
            a, b = expected.graph.objects[:2]
            page.get_by_role("tab", name="Ask").click()
            page.locator("#sf-question textarea").fill(f"How far is #{a.id} from #{b.id}?")
            page.get_by_role("button", name="Ask").click()
            truth = float(((a.center - b.center) ** 2).sum() ** 0.5)
            page.locator("#sf-answer").get_by_text(f"{truth:.2f} m").wait_for()
            pct = (1.3 - truth) / truth * 100
            verdict = f"1.30 m: {abs(pct):.0f} % {'more' if pct > 0 else 'less'} than the measured {truth:.2f} m"
            page.locator("#sf-vlm-answer").get_by_text(verdict).wait_for()
            assert VLM_REPLY in page.locator("#sf-vlm-answer").inner_text()
            assert vlm_server.requests[-1].user_text.startswith(
                f"How far is {expected.references[a.id]} from {expected.references[b.id]}?")
            _settled(page)
            page.screenshot(path=str(artifacts / "app_ask.png"))

            # the Affordance tab: heatmap with the interaction points, the region table, the 3D regions
            page.get_by_role("tab", name="Affordance").click()
            page.locator("#sf-action textarea").fill("pour")
            page.get_by_role("button", name="Show affordance").click()
            page.locator("#sf-afford-info").get_by_text("region").first.wait_for()
            page.locator("#sf-heat img").wait_for()
            page.locator("#sf-afford-plot .js-plotly-plot").wait_for()
            deadline = time.monotonic() + 30
            while _rows(page, "sf-afford-regions") == 0 and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            regions = _rows(page, "sf-afford-regions")
            assert regions > 0 and f"pour: {regions} region" in page.locator("#sf-afford-info").inner_text()
            assert _plot_traces(page, "sf-afford-plot", "affordance #") == regions
            assert _plot_traces(page, "sf-afford-plot", "approach #") == regions
            _settled(page)
            page.screenshot(path=str(artifacts / "app_affordance.png"), full_page=True)
        finally:
            browser.close()


def test_the_app_is_scriptable_through_its_named_api_endpoints(server):
    """gradio_client against the running app: the four endpoints, with the scene kept per client session."""
    from gradio_client import Client

    from spatialforge.app.handlers import analyse_scene, load_synthetic
    from spatialforge.app.ui import API_ENDPOINTS

    client = Client(server.url, verbose=False)
    assert sorted(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == sorted(API_ENDPOINTS)
    expected = analyse_scene(load_synthetic(3, 0), "synthetic, seed 0")
    status, overlay, depth, plot, graph, qa = client.predict(3, 0, api_name="/show_synthetic")
    assert f"{len(expected.graph.objects)} objects measured" in status and Path(overlay).is_file()
    assert Path(depth).is_file() and plot["type"] == "plotly"
    assert sum(f'"name":"box {o.id}:' in plot["plot"].replace(": ", ":") for o in expected.graph.objects) == \
        len(expected.graph.objects)
    assert len(graph["data"]) == len(expected.graph.objects) and len(qa["data"]) == len(expected.qa)
    a, b = expected.graph.objects[:2]
    answer, vlm, steps = client.predict(f"How far is #{a.id} from #{b.id}?", api_name="/ask")
    assert f"{float(((a.center - b.center) ** 2).sum() ** 0.5):.2f} m" in answer and VLM_REPLY in vlm
    assert steps["data"][0][:2] == ["measure", f"distance, #{a.id}, #{b.id}"]
    # a fresh client has no scene: the same one-line message as the page
    answer, _, _ = Client(server.url, verbose=False).predict("How far is #1 from #2?", api_name="/ask")
    assert "Pick a synthetic scene or upload one on the **Scene** tab first" in answer
