"""Hand-built scene graphs with known geometry for the reasoning tests."""

from __future__ import annotations

import numpy as np

from spatialforge.core.types import Box3D, CameraIntrinsics, Gravity, SceneGraph, SceneObject

INTR = CameraIntrinsics(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)


def obj(oid: int, caption: str, center, size=(0.2, 0.1, 0.3), camera_distance: float = 2.0) -> SceneObject:
    c = np.asarray(center, dtype=float)
    s = np.asarray(size, dtype=float)
    return SceneObject(id=oid, caption=caption, box=Box3D(c, s, 0.0), aabb_min=c - s / 2, aabb_max=c + s / 2,
                       width=float(s[0]), depth=float(s[1]), height=float(s[2]), camera_distance=camera_distance,
                       n_points=500, pixel_count=800, image_centroid=(100.0 + 40 * oid, 200.0),
                       image_bbox=(0, 0, 10, 10), truncated=False, occluded_fraction=0.0, size_reliable=True)


def graph(reliable: bool = True) -> SceneGraph:
    """A (0,2,.5), B (1,2,.5), C (0,3,.5): a right isosceles triangle (AB = AC = 1, BC = sqrt 2) and more."""
    objects = (
        obj(1, "red mug", (0.0, 2.0, 0.5), (0.1, 0.08, 0.12), camera_distance=2.06),
        obj(2, "blue box", (1.0, 2.0, 0.5), (0.4, 0.3, 0.25), camera_distance=2.3),
        obj(3, "green plant", (0.0, 3.0, 0.5), (0.3, 0.3, 0.9), camera_distance=3.04),
        obj(4, "lamp", (0.0, 2.0, 1.5), (0.2, 0.2, 0.5), camera_distance=2.5),
        obj(5, "chair", (-1.5, 2.5, 0.45), (0.5, 0.5, 0.9)),
        obj(6, "chair", (1.5, 2.5, 0.45), (0.5, 0.5, 0.9)),
        obj(7, "book", (2.0, 2.0, 0.5), (0.2, 0.15, 0.04)),
        obj(8, "vase", (0.5, 2.6, 0.5), (0.1, 0.1, 0.3)),
    )
    source = "plane" if reliable else "camera_prior"
    return SceneGraph(scene_id="hand", intrinsics=INTR, gravity=Gravity(source, np.eye(3), np.zeros(3)),
                      objects=objects)


REFS = {1: "the red mug", 2: "the blue box", 3: "the green plant", 4: "the lamp", 5: "the chair on the left",
        6: "the chair on the right", 7: "the book", 8: "the vase"}
