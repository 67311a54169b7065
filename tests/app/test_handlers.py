"""The web app's handlers without a browser: loading, safe unzipping, the tables, questions, affordance, CLI."""

from __future__ import annotations

import json
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
    """A stand-in AffordanceCLIP: all heat on one pixel."""

    def __init__(self, v: int, u: int) -> None:
        self.v, self.u = v, u

    def predict(self, images, actions):
        heat = np.zeros((1, *images[0].shape[:2]), np.float32)
        heat[0, self.v, self.u] = 1.0
        return [heat]


def test_affordance_point_is_lifted_into_the_gravity_frame(view):
    obj = view.graph.objects[0]
    rr, cc = np.nonzero((view.scene.instances == obj.id) & (view.scene.depth > 0))
    v, u = int(rr[len(rr) // 2]), int(cc[len(cc) // 2])
    image, info = affordance(view, "hold", _PeakPredictor(v, u))
    assert info["pixel"] == [u, v] and info["object"] == obj.id
    k, z = view.scene.intrinsics, float(view.scene.depth[v, u])
    want = view.graph.gravity.to_canonical(np.array([[(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z]]))[0]
    assert info["point"] == pytest.approx(want, abs=1e-3)
    assert image.size[0] == view.scene.image.shape[1]
    with pytest.raises(SpatialForgeError, match="type an action"):
        affordance(view, "  ", _PeakPredictor(v, u))


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
    from spatialforge.app import build_app

    # a checkpoint folder that does not exist: building the page must not touch it (it loads at the first action)
    assert build_app(AppConfig(afford_checkpoint=tmp_path / "nowhere")) is not None
