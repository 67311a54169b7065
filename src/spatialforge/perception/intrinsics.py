"""Pinhole intrinsics of a photo: from a focal length, EXIF, an estimate, or an assumption asked for.

Conventions (``docs/conventions.md``): square pixels, pixel centres at integer coordinates, so the
image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` and its centre -- the principal point assumed
here -- is ``((W - 1) / 2, (H - 1) / 2)``. The horizontal field of view spans the full width
``W`` (edge to edge), so ``fx = (W / 2) / tan(hfov / 2)``, the inverse of
:attr:`~spatialforge.core.types.CameraIntrinsics.hfov_deg`.

Focal lengths from EXIF
-----------------------
1. ``FocalLengthIn35mmFilm`` (tag 0xA405), the focal length a 36 x 24 mm full-frame camera would
   need for the same field of view. The equivalence is taken along the **diagonal** (the crop
   factor convention: a 43.27 mm full-frame diagonal), which is right whatever the image's aspect
   ratio: ``f_px = f35 * hypot(W, H) / hypot(36, 24)``. (Matching the 36 mm width instead,
   ``f35 / 36 * max(W, H)``, gives the same value for 3:2 images but is about 4 % short for 4:3
   phone photos.) This ratio is invariant to resizing and to EXIF rotation, so it is preferred.
2. ``FocalLength`` (0x920A, mm) with ``FocalPlaneXResolution`` (0xA20E, pixels per unit along the
   stored image's width) and ``FocalPlaneResolutionUnit`` (0xA210: 2 inch (the default), 3 cm,
   4 mm, 5 um): ``f_px = f_mm * pixels_per_mm``. The resolution refers to the camera's pixel grid:
   when ``PixelXDimension`` (0xA002) says the camera wrote a different width than the stored one,
   the focal is scaled by ``stored_width / PixelXDimension``.

Tags are read from the Exif sub-IFD, then from IFD0 (some writers put them there). A value is
rejected (``None``) when it is absent, not finite or non-positive, or when the horizontal field of
view it implies lies outside 20..120 degrees (no ordinary camera; most likely a wrong tag or a
cropped image).

Orientation: the returned focal is in pixels of the image *as displayed* (after
``ImageOps.exif_transpose``), whose size the caller passes as ``oriented_size`` (by default the
stored size, swapped for EXIF orientations 5 to 8). Square pixels make the focal itself the same
in both orientations; the size matters for the plausibility test (the horizontal FOV of the
displayed image) and when ``oriented_size`` is a resized copy (the focal is scaled along).

Precedence
----------
:func:`resolve_intrinsics` takes the first available of, with the source it records
(``intrinsics_source`` in each photo's provenance):

1. the user's focal length (``--focal-length``): ``"user"``;
2. the EXIF focal length: ``"exif"``;
3. an estimate from the image alone: the depth model's own field of view (Depth Pro as the depth
   backend) or the focal estimator's (Depth Pro's field-of-view head): ``"estimated:<how>"``, e.g.
   ``"estimated:depth-pro"``;
4. a horizontal field of view the user asked to assume (``--assume-hfov 60``):
   ``"assumed:hfov_60"``;
5. nothing: :class:`~spatialforge.errors.SceneError` with reason ``"no_intrinsics"`` (the photo is
   recorded as failed). A field of view is never assumed unless asked for.

(The photo pipeline runs the focal estimator only for photos that reach step 3 without an
estimate and only when no field of view is to be assumed, so an assumed FOV replaces the
estimator; a depth model's own estimate still wins over it, because its depth was scaled with it.)
"""

from __future__ import annotations

import math
from typing import Any

from spatialforge.core.types import CameraIntrinsics
from spatialforge.errors import ConfigError, SceneError

__all__ = [
    "EXIF_PLAUSIBLE_HFOV_DEG",
    "FULL_FRAME_DIAGONAL_MM",
    "exif_focal_length_px",
    "focal_from_hfov",
    "hfov_from_focal",
    "intrinsics_from_focal",
    "intrinsics_from_hfov",
    "resolve_intrinsics",
]

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.2666 mm: the 35 mm film frame's diagonal
EXIF_PLAUSIBLE_HFOV_DEG = (20.0, 120.0)  # EXIF focal lengths implying a horizontal FOV outside are ignored

# EXIF tag numbers
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_FOCAL_LENGTH = 0x920A
_FOCAL_LENGTH_35MM = 0xA405
_FOCAL_PLANE_X_RES = 0xA20E
_FOCAL_PLANE_Y_RES = 0xA20F
_FOCAL_PLANE_UNIT = 0xA210
_PIXEL_X_DIMENSION = 0xA002
_PIXEL_Y_DIMENSION = 0xA003
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit -> millimetres


# ----------------------------------------------------------------------------- helpers
def _size(width: Any, height: Any) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or int(value) != value or int(value) <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(width), int(height)


def _positive(value: Any, what: str, error: type[Exception] = ValueError) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(out) or out <= 0:
        raise error(f"{what} must be a finite number > 0, got {value!r}")
    return out


def _hfov(hfov_deg: Any, what: str, error: type[Exception] = ValueError) -> float:
    value = _positive(hfov_deg, what, error)
    if not value < 180.0:
        raise error(f"{what} must be within (0, 180) degrees, got {hfov_deg!r}")
    return value


def focal_from_hfov(width: int, hfov_deg: float) -> float:
    """Focal length in pixels for a horizontal field of view spanning ``width`` pixels."""
    return (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)


def hfov_from_focal(width: int, focal_px: float) -> float:
    """Horizontal field of view (degrees) of a ``width``-pixel image with focal ``focal_px``."""
    return math.degrees(2.0 * math.atan2(width / 2.0, focal_px))


# ----------------------------------------------------------------------------- intrinsics
def intrinsics_from_focal(width: int, height: int, focal_px: float) -> CameraIntrinsics:
    """Square-pixel intrinsics with focal ``focal_px`` and the principal point at the image centre.

    The centre is ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integer coordinates).
    """
    w, h = _size(width, height)
    f = _positive(focal_px, "focal_px")
    return CameraIntrinsics(fx=f, fy=f, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0, width=w, height=h)


def intrinsics_from_hfov(width: int, height: int, hfov_deg: float) -> CameraIntrinsics:
    """Square-pixel intrinsics whose horizontal field of view (full width, degrees) is ``hfov_deg``.

    ``fx = fy = (W / 2) / tan(hfov / 2)``; principal point ``((W - 1) / 2, (H - 1) / 2)``.
    """
    w, h = _size(width, height)
    return intrinsics_from_focal(w, h, focal_from_hfov(w, _hfov(hfov_deg, "hfov_deg")))


# ----------------------------------------------------------------------------- EXIF
def _exif_number(value: Any) -> float | None:
    """A finite positive float from an EXIF value (int, float, IFDRational, 1-tuple), else None."""
    if isinstance(value, tuple | list):
        if len(value) != 1:
            return None
        value = value[0]
    if isinstance(value, bool | bytes | str) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def exif_focal_length_px(pil_image: Any, oriented_size: tuple[int, int] | None = None) -> float | None:
    """The focal length in pixels from a PIL image's EXIF, or None when absent or implausible.

    Args:
        pil_image: an opened ``PIL.Image.Image`` (before ``ImageOps.exif_transpose``: its ``size``
            is the stored size and its EXIF is intact).
        oriented_size: ``(width, height)`` of the image the focal is for, as displayed (after EXIF
            orientation). Default: the stored size, swapped for EXIF orientations 5 to 8.

    Returns:
        The focal length in pixels of an ``oriented_size`` image (square pixels assumed), from
        ``FocalLengthIn35mmFilm`` (diagonal equivalence) or else ``FocalLength`` with the focal-plane
        resolution; None if neither gives a horizontal field of view within 20..120 degrees.
    """
    exif = pil_image.getexif()
    try:
        sub = dict(exif.get_ifd(_EXIF_IFD))
    except (KeyError, TypeError, ValueError, OSError):  # a broken Exif pointer: only IFD0 is usable
        sub = {}

    def tag(number: int) -> Any:
        return sub[number] if number in sub else exif.get(number)

    stored_w, stored_h = _size(*pil_image.size)
    orientation = _exif_number(exif.get(_ORIENTATION))
    rotated = orientation is not None and int(orientation) in (5, 6, 7, 8)
    if oriented_size is None:
        oriented_size = (stored_h, stored_w) if rotated else (stored_w, stored_h)
    width, height = _size(*oriented_size)
    # the stored image's width and height in the displayed orientation; the rescale to oriented_size
    display_w = stored_h if rotated else stored_w
    scale = width / display_w

    candidates: list[float] = []
    f35 = _exif_number(tag(_FOCAL_LENGTH_35MM))
    if f35 is not None:
        candidates.append(f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM)
    f_mm = _exif_number(tag(_FOCAL_LENGTH))
    res = _exif_number(tag(_FOCAL_PLANE_X_RES)) or _exif_number(tag(_FOCAL_PLANE_Y_RES))
    unit_value = tag(_FOCAL_PLANE_UNIT)
    unit = _exif_number(unit_value) if unit_value is not None else 2.0  # EXIF default: inches
    if f_mm is not None and res is not None and unit is not None and int(unit) in _MM_PER_UNIT:
        f_stored = f_mm * res / _MM_PER_UNIT[int(unit)]  # pixels of the camera's pixel grid
        camera_w = _exif_number(tag(_PIXEL_X_DIMENSION))
        camera_h = _exif_number(tag(_PIXEL_Y_DIMENSION))
        if camera_w is not None and camera_h is not None and (camera_w, camera_h) != (stored_w, stored_h):
            f_stored *= stored_w / camera_w
        candidates.append(f_stored * scale)
    lo, hi = EXIF_PLAUSIBLE_HFOV_DEG
    for focal in candidates:
        if math.isfinite(focal) and focal > 0 and lo <= hfov_from_focal(width, focal) <= hi:
            return float(focal)
    return None


# ----------------------------------------------------------------------------- precedence
def resolve_intrinsics(width: int, height: int, *, user_focal_px: float | None = None,
                       exif_focal_px: float | None = None, estimated_focal_px: float | None = None,
                       estimated_hfov_deg: float | None = None, estimated_by: str | None = None,
                       assumed_hfov_deg: float | None = None) -> tuple[CameraIntrinsics, str]:
    """The intrinsics of a ``width`` x ``height`` image from the best available source, and that source.

    Precedence: ``user_focal_px`` ("user") > ``exif_focal_px`` ("exif") > an estimate,
    ``estimated_focal_px`` else ``estimated_hfov_deg`` (``"estimated:<estimated_by>"``) >
    ``assumed_hfov_deg`` (``"assumed:hfov_<deg>"``, e.g. ``"assumed:hfov_60"``). All focal lengths
    are in pixels of this image; square pixels, principal point at the centre.

    Raises:
        ConfigError: an invalid user focal length or assumed FOV, or an estimate without ``estimated_by``.
        ValueError: an invalid EXIF or estimated value (a bad model output, reported per image).
        SceneError: (a :class:`~spatialforge.errors.SpatialForgeError`, reason ``"no_intrinsics"``)
            no source is available: no focal length, no estimate and no FOV to assume.
    """
    w, h = _size(width, height)
    if user_focal_px is not None:
        return intrinsics_from_focal(w, h, _positive(user_focal_px, "user focal length (px)", ConfigError)), "user"
    if exif_focal_px is not None:
        return intrinsics_from_focal(w, h, _positive(exif_focal_px, "EXIF focal length (px)")), "exif"
    if estimated_focal_px is not None or estimated_hfov_deg is not None:
        if not isinstance(estimated_by, str) or not estimated_by:
            raise ConfigError("an estimated focal length or FOV needs estimated_by (what estimated it)")
        source = f"estimated:{estimated_by}"
        if estimated_focal_px is not None:
            return intrinsics_from_focal(w, h, _positive(estimated_focal_px, "estimated focal length (px)")), source
        return intrinsics_from_hfov(w, h, _hfov(estimated_hfov_deg, "estimated horizontal FOV")), source
    if assumed_hfov_deg is None:
        raise SceneError(f"no intrinsics for this {w}x{h} image: no focal length from the user or EXIF, no estimate "
                         f"(no focal estimator, or it gave none), and no field of view to assume (pass "
                         f"--focal-length, --assume-hfov, or use a focal estimator)", reason="no_intrinsics")
    assumed = _hfov(assumed_hfov_deg, "assumed_hfov_deg", ConfigError)
    return intrinsics_from_hfov(w, h, assumed), f"assumed:hfov_{assumed:g}"
