"""Pure, torch-free core: typed containers exchanged between stages."""

from spatialforge.core.types import (
    Box3D,
    CameraIntrinsics,
    Gravity,
    ObjectAnnotation,
    QAPair,
    RGBDScene,
    SceneGraph,
    SceneObject,
    SkippedObject,
)

__all__ = [
    "Box3D",
    "CameraIntrinsics",
    "Gravity",
    "ObjectAnnotation",
    "QAPair",
    "RGBDScene",
    "SceneGraph",
    "SceneObject",
    "SkippedObject",
]
