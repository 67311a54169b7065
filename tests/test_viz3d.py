"""3D views of a scene (`spatialforge show --html / --rerun`): checked against synthetic ground truth."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spatialforge.cli.main import main
from spatialforge.geometry import build_scene_graph
from spatialforge.io.dataset import iter_rows
from spatialforge.io.scene_folder import load_scene

plotly = pytest.importorskip("plotly")
rr = pytest.importorskip("rerun")
from rerun.chunk import RrdReader  # noqa: E402

from spatialforge import viz3d  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two synthetic scenes (exact depth, a fitted floor) and their generated dataset."""
    root = tmp_path_factory.mktemp("viz3d")
    scenes, out = root / "S", root / "O"
    assert main(["synth", "--n", "2", "--out", str(scenes), "--seed", "7", "--width", "200", "--height", "150",
                 "--no-progress"]) == 0
    assert main(["generate", str(scenes), "--out", str(out), "--no-progress"]) == 0
    return scenes, out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spatialforge") and ": error: " in lines[0], err
    return lines[0]


def _truth_world_points(folder, scene) -> np.ndarray:
    """The valid pixels (row-major) in the synthetic world frame: z up, the floor at z = 0."""
    cam = json.loads((folder / "ground_truth.json").read_text())["camera"]
    rows, cols = np.nonzero(scene.depth > 0)
    k = scene.intrinsics
    z = scene.depth[rows, cols].astype(np.float64)
    p_cam = np.column_stack([(cols - k.cx) / k.fx * z, (rows - k.cy) / k.fy * z, z])
    return p_cam @ np.asarray(cam["R_world_from_cam"]).T + np.asarray(cam["position"])


def _chunks(path):
    out: dict[str, list] = {}
    for c in RrdReader(path).stream().to_chunks():
        out.setdefault(c.entity_path, []).extend(c.to_record_batch().to_pylist())
    return out


def _scene_qa(dataset, scene_id):
    return [p for r in iter_rows(dataset, columns=["scene_id", "qa"]) if r["scene_id"] == scene_id for p in r["qa"]]


def test_html_page_is_self_contained_with_a_box_per_object_and_the_camera(data, tmp_path, monkeypatch, capsys):
    scenes, _ = data
    folder = scenes / "synth_000000"
    page = tmp_path / "view.html"
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(folder), "--html", str(page)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.html"]  # no PNG, no temp file left
    text = page.read_text(encoding="utf-8")
    # opens offline: no script or stylesheet fetched from anywhere (plotly.js itself is inlined)
    assert re.search(r"<script[^>]*\ssrc=", text) is None and re.search(r"<link[^>]*\shref=", text) is None
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is inlined
    graph = build_scene_graph(load_scene(folder))
    assert len(graph.objects) >= 3
    for obj in graph.objects:
        assert html.escape(f"box {obj.id}: {obj.caption}") in text
        assert text.count(f'"name":"box {obj.id}: ') == 1
    assert '"name":"camera"' in text and '"name":"support plane"' in text and "z (m, up)" in text


def test_figure_points_are_in_the_canonical_frame(data):
    scenes, _ = data
    folder = scenes / "synth_000000"
    scene = load_scene(folder)
    graph = build_scene_graph(scene)
    assert graph.gravity.reliable
    fig = viz3d.scene_figure(scene, graph, max_points=10**9)
    traces = {t.name: t for t in fig.data}
    pts = np.column_stack([np.asarray(traces["points"][a], dtype=np.float64) for a in "xyz"])
    world = _truth_world_points(folder, scene)
    assert pts.shape == world.shape
    # The canonical frame differs from the synthetic world only by a turn about z and a shift in xy:
    # heights above the floor agree point by point, and the floor is at z = 0.
    dz = np.abs(pts[:, 2] - world[:, 2])
    assert np.median(dz) < 0.005 and np.percentile(dz, 95) < 0.03
    floor = world[:, 2] < 0.005
    assert floor.mean() > 0.2 and np.percentile(np.abs(pts[floor, 2]), 95) < 0.02
    centre = [traces["camera"][a][0] for a in "xyz"]
    truth_height = json.loads((folder / "ground_truth.json").read_text())["camera"]["position"][2]
    np.testing.assert_allclose(centre, [0.0, 0.0, truth_height], atol=0.02)
    plane = traces["support plane"]
    assert np.allclose(plane.z, 0.0) and len(plane.x) >= 3
    for obj in graph.objects:
        box = traces[f"box {obj.id}: {obj.caption}"]
        drawn = {(round(x, 6), round(y, 6), round(z, 6)) for x, y, z in zip(box.x, box.y, box.z, strict=True)
                 if x is not None}
        assert drawn == {tuple(np.round(c, 6)) for c in obj.box.corners()}
    assert list(traces["captions"].text) == [f"{o.id}: {o.caption}" for o in graph.objects]
    assert fig.layout.scene.aspectmode == "data"
    assert [fig.layout.scene[a].title.text for a in ("xaxis", "yaxis", "zaxis")] == [
        "x (m, camera right)", "y (m, forward)", "z (m, up)"]


def test_figure_subsamples_deterministically(data):
    scene = load_scene(data[0] / "synth_000001")
    graph = build_scene_graph(scene)
    a, ca = viz3d.canonical_points(scene, graph, max_points=500, seed=3)
    b, cb = viz3d.canonical_points(scene, graph, max_points=500, seed=3)
    c, _ = viz3d.canonical_points(scene, graph, max_points=500, seed=4)
    full, _ = viz3d.canonical_points(scene, graph, max_points=10**9)
    assert a.shape == (500, 3) and np.array_equal(a, b) and np.array_equal(ca, cb) and not np.array_equal(a, c)
    assert {tuple(p) for p in a} <= {tuple(p) for p in full}
    fig = viz3d.scene_figure(scene, graph, max_points=500, seed=3)
    np.testing.assert_allclose(np.asarray(fig.data[0].x, dtype=float), a[:, 0], atol=1e-5)  # float32 in the figure


def _figure_colours(trace) -> np.ndarray:
    """The RGB colour Plotly draws for each point of a trace coloured by palette index."""
    scale = [c for _, c in trace.marker.colorscale]
    rgb = np.array([[int(v) for v in c[4:-1].split(",")] for c in scale])
    index = np.asarray(trace.marker.color, dtype=float)
    position = (index - trace.marker.cmin) / (trace.marker.cmax - trace.marker.cmin) * (len(scale) - 1)
    assert np.allclose(position, np.round(position))  # every point sits on a palette entry: no blending
    return rgb[np.round(position).astype(int)]


def test_point_colours_are_the_images_through_a_palette(data):
    scene = load_scene(data[0] / "synth_000001")
    graph = build_scene_graph(scene)
    _, colors = viz3d.canonical_points(scene, graph, max_points=20_000, seed=0)
    fig = viz3d.scene_figure(scene, graph, max_points=20_000, seed=0)
    drawn = _figure_colours(fig.data[0])
    err = np.abs(drawn - colors.astype(int))
    assert len(np.unique(colors, axis=0)) > 256  # the median-cut case
    assert err.mean() < 4 and np.percentile(err, 99) < 24
    # few colours are exact, one colour is exact, no colour is no point
    few = np.array([[255, 0, 0], [0, 0, 255], [255, 0, 0], [10, 20, 30]], dtype=np.uint8)
    index, scale = viz3d.point_palette(few)
    assert len(scale) == 3 and index.dtype == np.uint8
    assert [scale[i][1] for i in index] == ["rgb(255,0,0)", "rgb(0,0,255)", "rgb(255,0,0)", "rgb(10,20,30)"]
    index, scale = viz3d.point_palette(few[:1])
    assert list(index) == [0] and scale == [[0.0, "rgb(255,0,0)"], [1.0, "rgb(255,0,0)"]]
    assert len(viz3d.point_palette(np.zeros((0, 3), np.uint8))[0]) == 0
    again = viz3d.scene_figure(scene, graph, max_points=20_000, seed=0)
    assert np.array_equal(np.asarray(again.data[0].marker.color), np.asarray(fig.data[0].marker.color))
    # what the page downloads: float32 coordinates and one byte of colour per point
    assert len(fig.to_json()) < 480 * 1024  # was 933 KiB with float64 and a colour string per point


def test_rerun_recording_reads_back_with_the_scene(data, tmp_path, capsys):
    folder = data[0] / "synth_000000"
    rrd = tmp_path / "scene.rrd"
    assert main(["show", str(folder), "--rerun", str(rrd)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {rrd}"
    assert rrd.read_bytes()[:4] == b"RRF2"
    (entry,) = RrdReader(rrd).recordings()
    assert entry.recording_id == "synth_000000"
    chunks = _chunks(rrd)
    assert {"/world", "/world/points", "/world/objects", "/world/support_plane", "/world/camera",
            "/world/camera/image", "/world/camera/depth"} <= set(chunks)
    assert not any(p.startswith("/qa") for p in chunks)  # no dataset given
    scene = load_scene(folder)
    graph = build_scene_graph(scene)
    (boxes,) = chunks["/world/objects"]
    assert boxes["Boxes3D:labels"] == [f"{o.id}: {o.caption}" for o in graph.objects]
    np.testing.assert_allclose(boxes["Boxes3D:centers"], [o.center for o in graph.objects], atol=1e-5)
    np.testing.assert_allclose(boxes["Boxes3D:half_sizes"], [o.box.size / 2 for o in graph.objects], atol=1e-5)
    (points,) = chunks["/world/points"]
    expected, colors = viz3d.canonical_points(scene, graph)
    np.testing.assert_allclose(points["Points3D:positions"], expected, atol=1e-5)
    assert len(points["Points3D:colors"]) == len(colors)
    cam = {k: v for row in chunks["/world/camera"] for k, v in row.items()}
    np.testing.assert_allclose(cam["Transform3D:translation"], [graph.gravity.t], atol=1e-5)
    np.testing.assert_allclose(np.reshape(cam["Transform3D:mat3x3"], (3, 3)).T, graph.gravity.R, atol=1e-6)
    assert cam["Pinhole:resolution"] == [[200.0, 150.0]]
    (plane,) = chunks["/world/support_plane"]
    assert np.allclose(np.asarray(plane["Mesh3D:vertex_positions"])[:, 2], 0.0)
    viewer = Path(sys.executable).with_name("rerun")  # the viewer's own check, where rerun-sdk put its CLI
    if viewer.is_file():
        done = subprocess.run([str(viewer), "rrd", "verify", str(rrd)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "verified without error" in done.stdout + done.stderr, done.stderr


def test_dataset_qa_goes_into_both_views(data, tmp_path, capsys):
    scenes, dataset = data
    page, rrd, png = tmp_path / "v.html", tmp_path / "v.rrd", tmp_path / "v.png"
    assert main(["show", str(scenes / "synth_000001"), "--html", str(page), "--rerun", str(rrd), "--out", str(png),
                 "--dataset", str(dataset)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(png), "wrote", str(page), "wrote", str(rrd)]
    qa = _scene_qa(dataset, "synth_000001")
    other = _scene_qa(dataset, "synth_000000")
    assert qa and other
    text = page.read_text(encoding="utf-8")
    assert f"{len(qa)} QA pairs" in text
    for pair in qa:
        assert html.escape(pair["question"]) in text and html.escape(pair["answer"]) in text
    mine = {q["question"] for q in qa}
    assert not any(html.escape(p["question"]) in text for p in other if p["question"] not in mine)
    chunks = _chunks(rrd)
    (doc,) = chunks["/qa"]
    logs = chunks["/qa/log"]
    assert len(logs) == len(qa)
    for pair in qa:
        assert pair["question"] in doc["TextDocument:text"][0]
        assert any(pair["question"] in row["TextLog:text"][0] and pair["answer"] in row["TextLog:text"][0]
                   for row in logs)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("extra", "expect"), [
    (["--html", "{tmp}/v.txt"], "--html {tmp}/v.txt: expected a .html or .htm file name"),
    (["--rerun", "{tmp}/v.html"], "--rerun {tmp}/v.html: expected a .rrd file name"),
    (["--rerun", "{scene}/v.rrd"], "inside the input"),
    (["--html", "{tmp}"], "is a folder"),
    (["--dataset", "{dataset}"], "--dataset: the QA pairs go into --html or --rerun"),
    (["--rerun", "{tmp}/v.rrd", "--dataset", "{tmp}/nowhere"], "--dataset {tmp}/nowhere: not a folder"),
    (["--rerun", "{tmp}/v.rrd", "--dataset", "{scenes}"], "no Parquet shards under data/"),
])
def test_bad_paths_are_one_line(data, tmp_path, capsys, extra, expect):
    scenes, dataset = data
    out = tmp_path / "o"
    out.mkdir()
    subs = {"tmp": str(out), "scene": str(scenes / "synth_000000"), "dataset": str(dataset), "scenes": str(scenes)}
    args = [a.format(**subs) for a in extra]
    assert main(["show", str(scenes / "synth_000000"), *args]) == 2
    assert expect.format(**subs) in _one_error_line(capsys.readouterr().err)
    assert list(out.iterdir()) == []


def test_dataset_without_the_scene_is_one_line(data, tmp_path, capsys):
    dataset = data[1]
    alone = tmp_path / "elsewhere"
    assert main(["synth", "--n", "1", "--out", str(alone), "--seed", "3", "--width", "64", "--height", "48",
                 "--no-progress"]) == 0
    (alone / "synth_000000").rename(alone / "other_scene")
    assert main(["show", str(alone / "other_scene"), "--rerun", str(tmp_path / "v.rrd"),
                 "--dataset", str(dataset)]) == 2
    assert "has no row for scene 'other_scene'" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "v.rrd").exists()


@pytest.mark.parametrize(("flag", "module"), [("--html", "plotly"), ("--rerun", "rerun")])
def test_missing_extra_is_one_line(data, tmp_path, capsys, monkeypatch, flag, module):
    monkeypatch.setitem(sys.modules, module, None)  # importing it now fails as if it were not installed
    target = tmp_path / ("v.html" if flag == "--html" else "v.rrd")
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(data[0] / "synth_000000"), flag, str(target)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"'{module}' is required for 3D views" in line and "pip install 'spatialforge[viz3d]'" in line
    assert list(tmp_path.iterdir()) == []


def test_scene_without_a_support_plane_has_no_plane_and_says_so(tmp_path):
    from spatialforge.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "S", n=1, seed=7, config=SynthConfig(width=160, height=120), progress=False)
    scene = load_scene(tmp_path / "S" / "synth_000000")
    graph = build_scene_graph(scene)
    assert graph.gravity.source == "camera_prior"  # too small a picture for the floor fit
    fig = viz3d.scene_figure(scene, graph)
    names = [t.name for t in fig.data]
    assert "support plane" not in names and "camera" in names
    assert len([n for n in names if n.startswith("box ")]) == len(graph.objects)
    assert "no support plane" in fig.layout.title.text
    viz3d.write_rerun(scene, graph, tmp_path / "v.rrd")
    chunks = _chunks(tmp_path / "v.rrd")
    assert "/world/points" in chunks and "/world/support_plane" not in chunks


def test_affordance_figure_shows_each_region_its_interaction_point_and_approach(data):
    from spatialforge.afford.lift import lift_affordance

    scene = load_scene(data[0] / "synth_000000")
    graph = build_scene_graph(scene)
    h, w = scene.depth.shape
    yy, xx = np.mgrid[:h, :w]
    heat = np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (w / 8) ** 2))
    regions = lift_affordance(heat, scene.depth, scene.intrinsics, graph.gravity,
                              instances=scene.instances.astype(np.int64), relative_threshold=0.3)
    assert len(regions) >= 2
    names = {r.object_id: f"#{r.object_id} thing" for r in regions}
    fig = viz3d.affordance_figure(scene, graph, regions, names=names, max_points=2_000, arrow_length=0.2)
    traces = {t.name: t for t in fig.data}
    base = [t.name for t in viz3d.scene_figure(scene, graph, max_points=2_000).data]
    assert [t.name for t in fig.data][:len(base)] == base  # the scene view, then the regions on top
    assert len(fig.data) == len(base) + 4 * len(regions)
    for r in regions:
        label = names[r.object_id]
        pts = traces[f"affordance {label}"]
        xyz = np.column_stack([np.asarray(pts[a], dtype=float) for a in "xyz"])
        np.testing.assert_allclose(xyz, r.points)  # every region point, in the scene graph's gravity frame
        np.testing.assert_allclose(np.asarray(pts.marker.color, dtype=float), r.heat)  # coloured by heat
        assert (pts.marker.cmin, pts.marker.cmax) == (0.0, max(float(q.heat.max()) for q in regions))
        point = traces[f"interaction {label}"]
        np.testing.assert_allclose([point.x[0], point.y[0], point.z[0]], r.interaction_point)
        arrow = traces[f"approach {label}"]
        start = np.array([arrow.x[0], arrow.y[0], arrow.z[0]])
        end = np.array([arrow.x[1], arrow.y[1], arrow.z[1]])
        np.testing.assert_allclose(end, r.interaction_point)  # the arrow ends on the surface
        np.testing.assert_allclose((end - start) / 0.2, r.approach, atol=1e-9)  # pointing along the approach
        head = traces[f"approach head {label}"]
        assert head.type == "cone" and head.anchor == "tip"
        np.testing.assert_allclose(np.array([head.u[0], head.v[0], head.w[0]]) / np.linalg.norm(
            [head.u[0], head.v[0], head.w[0]]), r.approach, atol=1e-9)
    # large regions are subsampled, the same way each time
    big = max(regions, key=lambda r: r.n_pixels)
    small = viz3d.affordance_figure(scene, graph, [big], max_points=500, max_region_points=50)
    again = viz3d.affordance_figure(scene, graph, [big], max_points=500, max_region_points=50)
    sub = next(t for t in small.data if t.name == f"affordance #{big.object_id}")
    assert len(sub.x) == 50 and list(sub.x) == list(next(t for t in again.data if t.name == sub.name).x)
    fixed = viz3d.affordance_figure(scene, graph, [big], max_points=500, heat_range=(0.2, 0.8))
    assert (fixed.data[-4].marker.cmin, fixed.data[-4].marker.cmax) == (0.2, 0.8)
    with pytest.raises(ValueError, match="arrow_length must be > 0"):
        viz3d.affordance_figure(scene, graph, regions, arrow_length=0)


def test_affordance_point_questions_show_their_part_and_truth(tmp_path, capsys):
    """A point question's value is a part id: the views name the part and its truth, not "2.000 point"."""
    scenes, dataset = tmp_path / "S", tmp_path / "O"
    assert main(["synth", "--n", "6", "--parts", "--out", str(scenes), "--width", "320", "--height", "240",
                 "--no-progress"]) == 0
    assert main(["generate", str(scenes), "--out", str(dataset), "--afford", "--qa-per-image", "1",
                 "--no-progress"]) == 0
    row = next(r for r in iter_rows(dataset, columns=["scene_id", "qa", "afford"]) if r["afford"])
    page, rrd = tmp_path / "v.html", tmp_path / "v.rrd"
    assert main(["show", str(scenes / row["scene_id"]), "--html", str(page), "--rerun", str(rrd),
                 "--dataset", str(dataset)]) == 0
    text = page.read_text(encoding="utf-8")
    log = " ".join(r["TextLog:text"][0] for r in _chunks(rrd)["/qa/log"])
    for a in row["afford"]:
        q = next(q for q in row["qa"] if q["id"] == a["qa_id"])
        (u, v), (x, y, z) = a["pixel"], a["point_3d"]
        shown = (f"the {a['part_name']} (part {a['part_id']}) of object {a['object_id']}: pixel ({u}, {v}), "
                 f"3D point ({x:.3f}, {y:.3f}, {z:.3f}) m")
        assert f"afford_hold_point: {html.escape(shown)}" in text and f"[afford_hold_point: {shown}]" in log
        assert f"{q['value']:.3f} point" not in text + log
    assert viz3d._qa_value({"kind": "point", "value": 3.0, "unit": "point"}) == "part 3"  # a dataset without truth
