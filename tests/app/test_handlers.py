"""The web app's handlers without a browser: loading, safe unzipping, the tables, questions, affordance, CLI."""

from __future__ import annotations

import base64
import json
import re
import socket
import stat
import zipfile

import numpy as np
import pytest

from spatialforge.app.handlers import (
    AppConfig,
    AppLimits,
    affordance,
    analyse_scene,
    answer_question,
    graph_rows,
    load_synthetic,
    load_upload,
    qa_rows,
    unpack_scene_zip,
)
from spatialforge.errors import ConfigError, SpatialForgeError
from tests.app.conftest import zip_folder


@pytest.fixture(scope="module")
def view(scene_folder):
    from spatialforge.io.scene_folder import load_scene

    return analyse_scene(load_scene(scene_folder), "test")


def test_synthetic_scene_tables_match_the_truth(scene_folder):
    v = analyse_scene(load_synthetic(0, 0), "synthetic")
    truth = {o["id"]: o for o in json.loads((scene_folder / "ground_truth.json").read_text())["objects"]}
    rows = graph_rows(v)
    assert [r[0] for r in rows] == [o.id for o in v.graph.objects] and rows
    for r in rows:
        if r[9]:  # size reliable: the height is the synthetic truth within 2 cm
            assert abs(r[8] - truth[r[0]]["height"]) < 0.02, r
    qa = qa_rows(v)
    assert len(qa) == len(v.qa) > 0
    for row, pair in zip(qa, v.qa, strict=True):
        assert row[2] == pair.question
        if pair.kind == "quantitative":
            assert row[4] == pytest.approx(pair.value, abs=5e-5)


def test_uploaded_zip_is_the_same_scene(scene_folder, tmp_path, view):
    scene, source = load_upload(zip_folder(scene_folder, tmp_path / "s.zip"), AppConfig())
    assert source == "scene folder s.zip" and scene.scene_id == scene_folder.name
    assert graph_rows(analyse_scene(scene, source)) == graph_rows(view)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda f, p: (p.write_bytes(b"not a zip"), p)[1], "not a zip archive"),
    (lambda f, p: zip_folder(f, p, drop=("camera.json",)), "synth_000000/camera.json: missing file"),
    (lambda f, p: zip_folder(f, p, replace={"objects.json": b"[{"}), "objects.json: invalid JSON at line 1"),
    (lambda f, p: zip_folder(f, p, extra={"../evil.txt": b"x"}), "unsafe path '../evil.txt'"),
    (lambda f, p: zip_folder(f, p, extra={"/abs.txt": b"x"}), "unsafe path '/abs.txt'"),
    (lambda f, p: zip_folder(f, p, extra={"other/camera.json": b"{}"}), "holds 2 scene folders"),
])
def test_bad_uploads_are_one_line_reasons(scene_folder, tmp_path, make, reason):
    archive = make(scene_folder, tmp_path / "up.zip")
    with pytest.raises(SpatialForgeError) as exc:
        load_upload(archive, AppConfig(), label="up.zip")
    msg = str(exc.value)
    assert msg.startswith("up.zip: ") and reason in msg and "\n" not in msg
    assert "/tmp" not in msg and str(tmp_path) not in msg
    assert not (tmp_path.parent / "evil.txt").exists()


def test_limits_and_links(scene_folder, tmp_path):
    archive = zip_folder(scene_folder, tmp_path / "s.zip")
    with pytest.raises(SpatialForgeError, match="unpacks to more than"):
        unpack_scene_zip(archive, tmp_path / "a", AppLimits(max_unpacked_bytes=10_000))
    with pytest.raises(SpatialForgeError, match="larger than the upload limit"):
        unpack_scene_zip(archive, tmp_path / "b", AppLimits(max_upload_bytes=100))
    with pytest.raises(SpatialForgeError, match="entries, more than the limit"):
        unpack_scene_zip(archive, tmp_path / "c", AppLimits(max_members=2))
    link = zipfile.ZipInfo("scene/image.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(SpatialForgeError, match="symbolic link"):
        unpack_scene_zip(tmp_path / "l.zip", tmp_path / "d")


def test_photo_without_perception_config_says_how(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 24)).save(tmp_path / "p.jpg")
    with pytest.raises(SpatialForgeError, match=r"p\.jpg: photos need the perception models: start the app with"):
        load_upload(tmp_path / "p.jpg", AppConfig())


def test_synthetic_index_is_checked():
    with pytest.raises(ConfigError, match="scene index: must be a whole number"):
        load_synthetic(-1, 0)
    with pytest.raises(ConfigError, match="seed: must be a whole number"):
        load_synthetic(0, 1.5)


def test_questions_are_answered_from_the_scene_graph(view):
    a, b, c = view.graph.objects[:3]
    text, steps = answer_question(view, f"How far is {view.references[a.id]} from {view.references[b.id]}?")
    assert f"{np.linalg.norm(a.center - b.center):.2f} m" in text
    assert steps[0][:2] == ["measure", f"distance, #{a.id}, #{b.id}"]
    text, _ = answer_question(view, f"How tall is #{c.id}?")
    assert f"{c.height:.2f} m" in text
    text, _ = answer_question(view, f"Is #{a.id} taller than #{b.id}?")
    assert text.startswith("Yes" if a.height > b.height else "No")
    with pytest.raises(SpatialForgeError, match="names none of the scene's objects"):
        answer_question(view, "How far is the unicorn from the camera?")
    with pytest.raises(SpatialForgeError, match="cannot tell what to measure"):
        answer_question(view, f"What colour is #{a.id}?")
    with pytest.raises(SpatialForgeError, match="no object #999"):
        answer_question(view, "How tall is #999?")


class _PeakPredictor:
    """A stand-in AffordanceCLIP: all heat on a (2k+1) x (2k+1) block of pixels around (v, u)."""

    def __init__(self, v: int, u: int, k: int = 1) -> None:
        self.v, self.u, self.k = v, u, k

    def predict(self, images, actions):
        heat = np.zeros((1, *images[0].shape[:2]), np.float32)
        heat[0, self.v - self.k:self.v + self.k + 1, self.u - self.k:self.u + self.k + 1] = 1.0
        return [heat]


class _BlobPredictor:
    """A stand-in AffordanceCLIP: a Gaussian blob of heat centred in the image."""

    def predict(self, images, actions):
        h, w = images[0].shape[:2]
        yy, xx = np.mgrid[:h, :w]
        return [np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (w / 12) ** 2))[None].astype(np.float32)]


def _inner_pixel(view, obj):
    """A pixel of ``obj`` with valid depth whose 5 x 5 neighbourhood is all on the object."""
    inside = (view.scene.instances == obj.id) & (view.scene.depth > 0)
    rr, cc = np.nonzero(inside)
    for r, c in zip(rr[len(rr) // 2:], cc[len(cc) // 2:], strict=True):
        if inside[r - 2:r + 3, c - 2:c + 3].all():
            return int(r), int(c)
    raise AssertionError("no inner pixel")


def test_affordance_interaction_point_is_lifted_into_the_gravity_frame(view):
    obj = view.graph.objects[0]
    v, u = _inner_pixel(view, obj)
    result = affordance(view, "hold", _PeakPredictor(v, u))
    (region,) = result.regions
    assert region.object_id == obj.id and region.pixel == (u, v) and region.n_pixels == 9
    k, z = view.scene.intrinsics, float(view.scene.depth[v, u])
    want = view.graph.gravity.to_canonical(np.array([[(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z]]))[0]
    assert region.interaction_point == pytest.approx(want, abs=1e-6)
    (row,) = result.rows()
    assert row[0] == f"#{obj.id} {view.references[obj.id]}" and row[1] == 9
    assert row[2] == pytest.approx(region.area_m2 * 1e4, abs=0.01) and row[4] == f"({u}, {v})"
    assert row[5:8] == pytest.approx(list(want), abs=1e-4)
    assert result.image.size == (view.scene.image.shape[1], view.scene.image.shape[0] + 20)  # + the title strip
    assert result.image.getpixel((u, v)) == (0, 0, 0)  # the interaction pixel is marked (the cross's centre)
    with pytest.raises(SpatialForgeError, match="type an action"):
        affordance(view, "  ", _PeakPredictor(v, u))
    # one hot pixel is no region (a region needs 3 pixels, as `afford predict --depth`)
    with pytest.raises(SpatialForgeError, match="no object has a region of at least 3 pixels"):
        affordance(view, "hold", _PeakPredictor(v, u, k=0))


def test_affordance_regions_match_lift_affordance_per_object(view):
    from spatialforge.afford.lift import lift_affordance
    from spatialforge.viz import render_heatmap

    result = affordance(view, "pour", _BlobPredictor(), relative_threshold=0.4)
    heat = _BlobPredictor().predict([view.scene.image], ["pour"])[0][0]
    want = lift_affordance(heat, view.scene.depth, view.scene.intrinsics, view.graph.gravity,
                           instances=view.scene.instances.astype(np.int64), relative_threshold=0.4)
    assert len(result.regions) == len(want) >= 2
    for got, exp in zip(result.regions, want, strict=True):
        assert got.object_id == exp.object_id and got.area_m2 == pytest.approx(exp.area_m2)
        assert got.interaction_point == pytest.approx(exp.interaction_point)
        assert got.approach == pytest.approx(exp.approach) and np.linalg.norm(got.approach) == pytest.approx(1.0)
    rows = result.rows()
    assert [r[0].split()[0] for r in rows] == [f"#{r.object_id}" for r in want]
    peak = float(heat[view.scene.depth > 0].max())
    plain = np.asarray(render_heatmap(view.scene.image, heat / peak, title=f"'pour': heat / its peak {peak:.3g}"))
    marked = np.asarray(result.image)
    for r in want:  # every interaction pixel is marked, and nothing far from them changed
        u, v = r.pixel
        assert tuple(marked[v, u]) == (0, 0, 0) != tuple(plain[v, u])
    changed_rows = np.nonzero(np.any(marked != plain, axis=2))[0]
    vs = [r.pixel[1] for r in want]
    assert changed_rows.min() >= min(vs) - 30 and changed_rows.max() <= max(vs) + 30
    # the threshold is a fraction of the peak: a higher one gives smaller regions
    tight = affordance(view, "pour", _BlobPredictor(), relative_threshold=0.9)
    assert sum(r.n_pixels for r in tight.regions) < sum(r.n_pixels for r in result.regions)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan"), "half", True, None])
def test_affordance_threshold_is_checked(view, bad):
    with pytest.raises(ConfigError, match=r"region threshold: must be a fraction of the peak heat in \(0, 1\]"):
        affordance(view, "pour", _BlobPredictor(), relative_threshold=bad)


def test_direction_words():
    from spatialforge.app.handlers import direction_words

    assert direction_words([0, 0, -1]) == "down"
    assert direction_words([0.0, 0.8, -0.6]) == "forward (away from the camera), down"
    assert direction_words([-1, 0, 0]) == "left"
    assert direction_words([0.2, -0.97, 0.1]) == "towards the camera"


def test_tiny_affordanceclip_checkpoint_in_the_tab(view, afford_checkpoint):
    """The tab's path with a real (tiny, random) AffordanceCLIP: the model loads once per app."""
    from spatialforge.afford.lift import lift_affordance
    from spatialforge.app.handlers import AppModels
    from spatialforge.app.ui import afford_outputs

    config = AppConfig(afford_checkpoint=afford_checkpoint, device="cpu")
    models = AppModels(config)
    info, image, fig, rows = afford_outputs(view, "pour", 0.5, config, models)
    assert models.builds["afford"] == 1
    heat = models.afford().predict([view.scene.image], ["pour"])[0][0]
    want = lift_affordance(heat, view.scene.depth, view.scene.intrinsics, view.graph.gravity,
                           instances=view.scene.instances.astype(np.int64))
    assert len(rows) == len(want) > 0 and info.startswith(f"**pour**: {len(want)} region")
    assert [r[1] for r in rows] == [w.n_pixels for w in want]
    assert image.size == (view.scene.image.shape[1], view.scene.image.shape[0] + 20)
    names = [t.name for t in fig.data]
    assert sum(n.startswith("affordance #") for n in names) == len(want)
    assert sum(n.startswith("interaction #") for n in names) == len(want)
    afford_outputs(view, "cut with", 0.5, config, models)
    assert models.builds["afford"] == 1  # not loaded again
    msg, *rest = afford_outputs(view, "pour", 2.0, config, models)
    assert "region threshold: must be a fraction" in msg and rest == [None, None, []]
    msg, *_ = afford_outputs(None, "pour", 0.5, config, models)
    assert "Pick a synthetic scene" in msg


def _parse(*argv):
    from spatialforge.cli.app import add_app_parser
    from spatialforge.cli.options import Parser

    parser = Parser(prog="spatialforge")
    add_app_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["app", *argv])


def test_cli_options_are_checked_before_serving(tmp_path, capsys):
    from spatialforge.cli.app import check_listen, make_config

    with pytest.raises(SystemExit):
        _parse("--port", "70000")
    assert "argument --port" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--config .*missing\.toml: no such file"):
        make_config(_parse("--config", str(tmp_path / "missing.toml")))
    with pytest.raises(ConfigError, match="--afford-checkpoint"):
        make_config(_parse("--afford-checkpoint", str(tmp_path)))
    assert make_config(_parse()).perception is None
    assert check_listen("127.0.0.1", 0) > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--port {port}: cannot listen on 127.0.0.1:{port}"):
            check_listen("127.0.0.1", port)


def test_build_app_loads_nothing(tmp_path):
    pytest.importorskip("gradio")
    from spatialforge.app import AppModels, build_app
    from spatialforge.perception.config import PerceptionConfig

    # models that do not exist: building the page must not touch them (they load at their first use)
    config = AppConfig(afford_checkpoint=tmp_path / "nowhere", vlm=f"hf:{tmp_path / 'no-vlm'}",
                       perception=PerceptionConfig())
    models = AppModels(config)
    assert build_app(config, models) is not None
    assert sum(models.builds.values()) == 0


# ---------------------------------------------------------------------------------------------- photos

def _photo_config(perception_config):
    from spatialforge.perception.config import load_perception_config

    return AppConfig(perception=load_perception_config(perception_config), perception_source=str(perception_config))


def test_photo_upload_goes_through_the_perception_models_built_once(perception_config, tmp_path, monkeypatch):
    from spatialforge.app.handlers import AppModels
    from spatialforge.app.ui import MAX_3D_POINTS, _scene_outputs
    from spatialforge.perception.pipeline import PerceptionPipeline
    from tests.app.conftest import write_photo

    built = []
    original = PerceptionPipeline.from_config.__func__

    def counting(cls, config):
        built.append(config)
        return original(cls, config)

    monkeypatch.setattr(PerceptionPipeline, "from_config", classmethod(counting))
    config = _photo_config(perception_config)
    models = AppModels(config)
    for i, name in enumerate(("kitchen.jpg", "office.png")):
        scene, source = load_upload(write_photo(tmp_path / name, i), config, label=name, models=models)
        assert source == f"photo {name}" and scene.scene_id == name.split(".")[0]
        assert scene.image.shape == (120, 160, 3) and scene.depth.shape == (120, 160)
        assert scene.provenance["depth_model"] == str(perception_config.parent / "depth")
        assert scene.provenance["intrinsics_source"] == "assumed:hfov_60"  # assumed_hfov_deg of the config
        assert set(np.unique(scene.instances)) - {0} == {o.id for o in scene.objects} != set()
        v = analyse_scene(scene, source)
        status, overlay, depth, fig, graph, qa, state = _scene_outputs(v)
        assert f"({source})" in status and state is v
        assert overlay.width >= 480 and depth.width >= 480  # masks with captions, metric depth
        assert len(graph) == len(v.graph.objects) > 0 and len(qa) == len(v.qa) > 0
        assert sum(t.name.startswith("box ") for t in fig.data) == len(v.graph.objects)
        assert len(fig.data[0].x) == min(MAX_3D_POINTS, int((scene.depth > 0).sum()))
    assert len(built) == 1 and models.builds["perception"] == 1  # once per app, not per upload


def test_bad_photo_uploads_show_their_reason_before_any_model_loads(perception_config, tmp_path):
    from PIL import Image

    from spatialforge.app.handlers import AppModels
    from tests.app.conftest import write_photo

    config = _photo_config(perception_config)
    models = AppModels(config)
    (tmp_path / "notes.jpg").write_bytes(b"this is not a jpeg")
    good = write_photo(tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (20, 20)).save(tmp_path / "tiny.png")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in (("notes.jpg", "notes.jpg: cannot decode image (not a known image format)"),
                         ("cut.jpg", "cut.jpg: cannot decode image (image file is truncated"),
                         ("tiny.png", "tiny.png: 20x20 is smaller than"),
                         ("empty.png", "empty.png: the file is empty (0 bytes)")):
        with pytest.raises(SpatialForgeError) as exc:
            load_upload(tmp_path / name, config, label=name, models=models)
        assert str(exc.value).startswith(reason) and "\n" not in str(exc.value) and str(tmp_path) not in str(exc.value)
    assert models.builds["perception"] == 0  # nothing was built for images that cannot be read
    # a readable photo in which the models find nothing to measure: the pipeline's reason, once
    strict = tmp_path / "strict.toml"
    strict.write_text(perception_config.read_text().replace("score_threshold = 0.0", "score_threshold = 1.0"))
    config = _photo_config(strict)
    with pytest.raises(SpatialForgeError) as exc:
        load_upload(tmp_path / "good.jpg", config, label="desk.jpg", models=AppModels(config))
    assert re.fullmatch(r"desk\.jpg: no object passed the detection filters \(\d+ raw box(es)?\)", str(exc.value))


def test_models_are_built_once_under_concurrent_use(monkeypatch):
    import threading
    import time

    from spatialforge.app.handlers import AppModels
    from spatialforge.perception.config import PerceptionConfig
    from spatialforge.perception.pipeline import PerceptionPipeline

    calls = []

    def slow(cls, config):
        calls.append(1)
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(PerceptionPipeline, "from_config", classmethod(slow))
    models = AppModels(AppConfig(perception=PerceptionConfig()))
    got = []
    threads = [threading.Thread(target=lambda: got.append(models.perception())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1 and models.builds["perception"] == 1
    with pytest.raises(SpatialForgeError, match=r"^No VLM is configured: start the app with `--vlm SPEC`"):
        models.vlm()


# ---------------------------------------------------------------------------------------------- VLM beside the graph

def _vlm_config(server, **options):
    return AppConfig(vlm=f"openai:fake-vlm@{server.base_url}", vlm_options={"max_retries": 0, **options})


def test_vlm_answer_is_read_by_the_evaluation_parser_and_compared(view):
    from spatialforge.app.handlers import AppModels, ask_vlm, scene_answer
    from spatialforge.eval.models.base import SYSTEM_PROMPT
    from spatialforge.eval.types import BenchmarkItem
    from tests.eval.fake_openai_server import FakeOpenAIServer

    a, b = view.graph.objects[:2]
    ra, rb = view.references[a.id], view.references[b.id]
    replies = {"Which": f"{rb}.", "far": "They are about 1.3 meters apart.", "taller": "Yes, it is."}  # first match
    with FakeOpenAIServer(oracle=lambda text: next(r for k, r in replies.items() if k in text)) as server:
        models = AppModels(_vlm_config(server))
        model = models.vlm()
        distance = scene_answer(view, f"How far is #{a.id} from #{b.id}?")
        got = ask_vlm(view, f"How far is #{a.id} from #{b.id}?", model, distance)
        truth = float(np.linalg.norm(a.center - b.center))
        pct = (1.3 - truth) / truth * 100
        assert got.error is None and got.reply == replies["far"]
        more = "more" if pct > 0 else "less"
        assert got.verdict == f"1.30 m: {abs(pct):.0f} % {more} than the measured {truth:.2f} m"
        assert got.record["abs_rel_err"] == pytest.approx(abs(1.3 - truth) / truth)
        sent = server.requests[-1]
        # the VLM sees names, not ids, and the evaluation's prompt for a length, with the scene's image
        assert sent.user_text == (f"How far is {ra} from {rb}?\n"
                                  "Answer directly with a single value and its unit of length.")
        assert sent.body["messages"][0]["content"] == SYSTEM_PROMPT and len(sent.image_urls) == 1
        item = BenchmarkItem(id="x", benchmark="x", question="x", kind="quantitative", type="x", truth=1.0, unit="m",
                             image_bytes=base64.b64decode(sent.image_urls[0].split(",", 1)[1]))
        assert item.load_image().size == (view.scene.image.shape[1], view.scene.image.shape[0])

        taller = scene_answer(view, f"Is #{a.id} taller than #{b.id}?")
        got = ask_vlm(view, f"Is #{a.id} taller than #{b.id}?", model, taller)
        truth_word = "yes" if a.height > b.height else "no"
        agree = "agrees" if truth_word == "yes" else "disagrees"
        assert got.verdict == f"yes: {agree} with the scene graph ({truth_word})"
        assert server.requests[-1].user_text.endswith("Answer directly with yes or no.")

        which = scene_answer(view, f"Which is taller, #{a.id} or #{b.id}?")
        got = ask_vlm(view, f"Which is taller, #{a.id} or #{b.id}?", model, which)
        want = ra if a.height > b.height else rb
        assert got.verdict == f"{rb}: {'agrees' if want == rb else 'disagrees'} with the scene graph ({want})"
        assert server.requests[-1].user_text.endswith(f"Answer directly with one of: {ra}; {rb}.")
    assert models.builds["vlm"] == 1


def test_vlm_failures_are_one_line_and_the_graph_answer_stays(view):
    from spatialforge.app.handlers import AppModels
    from spatialforge.app.ui import ask_outputs
    from tests.eval.fake_openai_server import FakeOpenAIServer

    a, b = view.graph.objects[:2]
    want = f"{np.linalg.norm(a.center - b.center):.2f} m"
    with FakeOpenAIServer(slow_s=2.0) as server:
        config = _vlm_config(server, timeout=0.3)
        models = AppModels(config)
        graph, vlm, steps = ask_outputs(view, f"How far is #{a.id} from #{b.id}? [slow]", config, models)
        assert want in graph and steps
        assert vlm.startswith("**VLM (openai:fake-vlm):** no answer: ") and "timed out after 0.3 s" in vlm
        assert "\n" not in vlm
        graph, vlm, _ = ask_outputs(view, f"How far is #{a.id} from #{b.id}? [500x5]", config, models)
        assert want in graph and "no answer: HTTP 500" in vlm
        url = server.base_url
    # the server is down now
    config = AppConfig(vlm=f"openai:fake-vlm@{url}", vlm_options={"max_retries": 0})
    graph, vlm, _ = ask_outputs(view, f"How far is #{a.id} from #{b.id}?", config, AppModels(config))
    assert want in graph and "no answer: " in vlm and "unreachable" in vlm and "\n" not in vlm


def test_question_the_graph_cannot_read_still_goes_to_the_vlm(view):
    from spatialforge.app.handlers import AppModels
    from spatialforge.app.ui import ask_outputs
    from tests.eval.fake_openai_server import FakeOpenAIServer

    a = view.graph.objects[0]
    with FakeOpenAIServer(oracle=lambda text: "It is a warm red.") as server:
        config = _vlm_config(server)
        graph, vlm, steps = ask_outputs(view, f"What colour is #{a.id}?", config, AppModels(config))
        assert "cannot tell what to measure" in graph and steps == []
        assert "It is a warm red." in vlm and "not compared" in vlm and "could not read this question" in vlm
        assert server.requests[-1].user_text == f"What colour is {view.references[a.id]}?"  # verbatim, no format
        # no VLM configured: its box stays empty
        graph, vlm, _ = ask_outputs(view, f"How tall is #{a.id}?", AppConfig(), AppModels(AppConfig()))
        assert f"{a.height:.2f} m" in graph and vlm == ""


def test_local_hf_vlm_loads_once_at_first_use(view, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from spatialforge.app.handlers import AppModels, build_vlm
    from spatialforge.app.ui import _plain, ask_outputs
    from tests.eval.tiny_vlms import build_tiny_vlm

    folder = build_tiny_vlm("idefics3", tmp_path / "vlm")
    config = AppConfig(vlm=f"hf:{folder}", device="cpu")
    assert build_vlm(config).model is None  # building (what the CLI checks) loads nothing
    models = AppModels(config)
    a, b = view.graph.objects[:2]
    for _ in range(2):
        _, vlm, _ = ask_outputs(view, f"How far is #{a.id} from #{b.id}?", config, models)
        assert vlm.startswith(f"**VLM ({_plain(f'hf:{folder}')}):** ") and "its reply: “" in vlm
    assert models.builds["vlm"] == 1 and models.vlm().model is not None
    # what the tiny random model says is random: whatever it is, the evaluation's parser decided about it
    assert "the measured" in vlm or "reads no answer" in vlm


def test_cli_vlm_and_checkpoint_options_are_checked(tmp_path, capsys, afford_checkpoint):
    import shutil

    from spatialforge.cli.app import make_config

    config = make_config(_parse("--vlm", "openai:qwen@http://127.0.0.1:1/v1", "--vlm-timeout", "5"))
    assert config.vlm == "openai:qwen@http://127.0.0.1:1/v1"
    assert config.vlm_options == {"api_key_env": None, "timeout": 5.0, "max_retries": 1, "dtype": None}
    assert make_config(_parse("--vlm", "prior")).vlm_options["max_retries"] is None
    assert make_config(_parse("--vlm", "openai:m", "--vlm-max-retries", "0")).vlm_options["max_retries"] == 0
    assert make_config(_parse("--vlm", f"hf:{tmp_path}", "--vlm-dtype", "float32")).vlm_options["dtype"] == "float32"
    for argv, message in (
            (("--vlm", "gpt-4o"), "--vlm: model spec 'gpt-4o': unknown form; use one of: openai:"),
            (("--vlm", "openai:"), "--vlm: model spec 'openai:': the model name is empty"),
            (("--vlm", "prior:big"), "--vlm: model spec 'prior:big': 'prior' takes no argument"),
            (("--vlm-timeout", "3"), "--vlm-timeout: only used with --vlm"),
            (("--vlm", "prior", "--vlm-api-key-env", "KEY"), "--vlm-api-key-env: only used by an openai: VLM"),
            (("--vlm", "openai:m", "--vlm-dtype", "float16"), "--vlm-dtype: only used by an hf: VLM"),
            (("--vlm", "prior", "--vlm-max-retries", "2"), "--vlm-max-retries: only used by an openai: VLM")):
        with pytest.raises(ConfigError) as exc:
            make_config(_parse(*argv))
        assert str(exc.value).startswith(message), (argv, str(exc.value))
    for argv, flag in ((("--vlm-timeout", "0"), "--vlm-timeout"), (("--vlm-max-retries", "-1"), "--vlm-max-retries"),
                       (("--vlm-dtype", "int8"), "--vlm-dtype")):
        with pytest.raises(SystemExit):
            _parse(*argv)
        assert f"argument {flag}" in capsys.readouterr().err
    # a checkpoint without its weights, or whose local CLIP folder is gone, is refused before serving
    assert make_config(_parse("--afford-checkpoint", str(afford_checkpoint))).afford_checkpoint == afford_checkpoint
    partial = tmp_path / "partial"
    shutil.copytree(afford_checkpoint, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"--afford-checkpoint .*partial: model.safetensors is missing"):
        make_config(_parse("--afford-checkpoint", str(partial)))
    moved = tmp_path / "moved"
    shutil.copytree(afford_checkpoint, moved)
    meta = json.loads((moved / "config.json").read_text())
    meta["model"]["clip_model"] = f"local-dir:{tmp_path / 'gone'}"
    (moved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"--afford-checkpoint .*moved: its CLIP 'local-dir:.*gone' is not a folder"):
        make_config(_parse("--afford-checkpoint", str(moved)))


def test_model_and_user_text_is_shown_as_it_is():
    """A reply or a name is never HTML or Markdown formatting in the page."""
    from spatialforge.app.ui import _plain

    assert _plain("<img src=x onerror=alert(1)> **bold** _it_ [a](b) `c` #1 o'clock") == (
        "&lt;img src=x onerror=alert(1)&gt; \\*\\*bold\\*\\* \\_it\\_ \\[a\\](b) \\`c\\` \\#1 o'clock")


def test_device_flag_wins_over_the_perception_files_device(perception_config):
    from spatialforge.cli.app import make_config
    from spatialforge.perception.config import load_perception_config

    from_file = load_perception_config(perception_config).device
    assert make_config(_parse("--config", str(perception_config))).perception.device == from_file
    other = "cuda:1" if from_file != "cuda:1" else "cpu"
    config = make_config(_parse("--config", str(perception_config), "--device", other))
    assert config.perception.device == other and config.device == other
    assert make_config(_parse()).device == "auto"  # AffordanceCLIP and an hf VLM: auto by default


def test_affordance_reports_the_peak_its_threshold_is_a_fraction_of(view, monkeypatch):
    """Heat where there is no depth is not the peak: the regions and the page's words use the valid-depth peak."""
    from dataclasses import replace
    from pathlib import Path

    from spatialforge.app.handlers import AppModels
    from spatialforge.app.ui import afford_outputs

    depth = view.scene.depth.copy()
    depth[:4, :4] = 0.0  # a corner without depth, where the map is hottest
    blind = replace(view, scene=replace(view.scene, depth=depth))

    class _Hot(_BlobPredictor):
        def predict(self, images, actions):
            (heat,) = super().predict(images, actions)
            heat = 0.6 * heat
            heat[0, :4, :4] = 1.0
            return [heat]

    result = affordance(blind, "pour", _Hot())
    assert result.peak == pytest.approx(0.6, abs=1e-3) and len(result.regions) >= 1
    models = AppModels(AppConfig(afford_checkpoint=Path("ckpt")))
    monkeypatch.setattr(models, "afford", lambda: _Hot())
    info, *_ = afford_outputs(blind, "pour", 0.5, models.config, models)
    assert "x the peak 0.60 over pixels with valid depth" in info
