"""Pictures people read: labels stay inside the picture and never cover one another."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spatialforge.viz import place_labels


def _boxes(corners, sizes):
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes, strict=True)]


@pytest.mark.parametrize("anchor", [(5.0, 5.0), (315.0, 235.0), (160.0, 120.0), (-40.0, 400.0)])
def test_crowded_labels_stay_inside_and_apart(anchor):
    sizes = [(7 * len(str(i)) + 5, 13) for i in range(12)]
    corners = place_labels([anchor] * 12, sizes, 320, 240)
    boxes = _boxes(corners, sizes)
    for x0, y0, x1, y1 in boxes:
        assert x0 >= 0 and x1 <= 320 and y0 >= 0 and y1 <= 240
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_a_free_label_sits_on_its_anchor():
    assert place_labels([(100.0, 50.0)], [(20, 10)], 320, 240) == [(90, 45)]


def test_show_draws_every_caption_in_the_legend(tmp_path):
    from spatialforge.geometry import build_scene_graph
    from spatialforge.io.scene_folder import load_scene
    from spatialforge.synth import generate_scene
    from spatialforge.synth.writer import write_scene
    from spatialforge.viz import render_scene_graph

    folder = write_scene(generate_scene(3, seed=0), tmp_path)
    scene = load_scene(folder)
    graph = build_scene_graph(scene)
    img = render_scene_graph(scene, graph)
    # the legend adds one row per object below the picture
    assert img.height == scene.image.shape[0] + 16 * len(graph.objects) + 8
    assert np.asarray(img)[scene.image.shape[0]:].std() > 0  # the legend has ink
