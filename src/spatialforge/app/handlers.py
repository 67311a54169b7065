"""What the web app does, without Gradio: load a scene, analyse it, answer questions, show affordances.

Every function here is plain Python (numpy, PIL, the spatialforge stages), so it is tested without a
browser. A problem with what a user gave (a bad upload, an unknown object in a question) raises a
:class:`~spatialforge.errors.SpatialForgeError` whose one-line message the page shows in its error box;
the messages are those of the CLI (``load_scene``'s reasons), with the temporary folder an upload is
unpacked into replaced by the upload's own name.

Uploads are unpacked by :func:`unpack_scene_zip`: no absolute names, no ``..``, no links, at most
:attr:`AppLimits.max_members` entries and :attr:`AppLimits.max_unpacked_bytes` bytes (counted while
reading, not taken from the archive's headers).
"""

from __future__ import annotations

import math
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from spatialforge.core.types import QAPair, RGBDScene, SceneGraph
from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = [
    "AppConfig",
    "AppLimits",
    "SceneView",
    "analyse_scene",
    "answer_question",
    "graph_rows",
    "load_photo",
    "load_synthetic",
    "load_upload",
    "qa_rows",
    "unpack_scene_zip",
]

GRAPH_HEADERS = ["id", "caption", "reference", "x (m)", "y (m)", "z (m)", "width (m)", "depth (m)", "height (m)",
                 "size reliable", "footprint reliable", "truncated", "occluded"]
QA_HEADERS = ["type", "kind", "question", "answer", "value", "unit", "subjects"]
STEP_HEADERS = ["tool", "arguments", "value", "unit"]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_MAX_SYNTH_INDEX = 999_999  # scene_folder_name pads to six digits


@dataclass(frozen=True)
class AppLimits:
    """Upload limits (bytes and entries); anything larger is refused with a one-line reason."""

    max_upload_bytes: int = 200 * 2**20
    max_unpacked_bytes: int = 1024 * 2**20
    max_members: int = 10_000


@dataclass(frozen=True)
class AppConfig:
    """What the app may use. Nothing is loaded when the app starts: models load at their first use.

    ``perception``: a :class:`~spatialforge.perception.config.PerceptionConfig` (photos are accepted only
    with one); ``afford_checkpoint``: an AffordanceCLIP checkpoint folder (the Affordance tab needs one);
    ``device``: where those models run; ``seed``: the QA and geometry seed (as ``generate --seed``).
    """

    perception: Any = None
    perception_source: str | None = None
    afford_checkpoint: Path | None = None
    device: str = "auto"
    seed: int = 0
    limits: AppLimits = field(default_factory=AppLimits)


@dataclass
class SceneView:
    """One analysed scene: the scene, its 3D scene graph, how the QA engine names its objects, its QA."""

    scene: RGBDScene
    graph: SceneGraph
    references: dict[int, str]
    qa: list[QAPair]
    source: str


# ---------------------------------------------------------------------------------------------- loading

def load_synthetic(index: Any, seed: Any = 0) -> RGBDScene:
    """Built-in synthetic scene ``index`` (as ``spatialforge synth --seed SEED`` writes it), loaded back."""
    from spatialforge.io.scene_folder import load_scene
    from spatialforge.synth import generate_scene, write_scene

    index_i, seed_i = _whole("scene index", index, _MAX_SYNTH_INDEX), _whole("seed", seed, 2**32 - 1)
    scene = generate_scene(index_i, seed_i)
    with tempfile.TemporaryDirectory(prefix="spatialforge-app-") as tmp:
        return load_scene(write_scene(scene, tmp))


def _whole(what: str, value: Any, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or float(value) != int(value) or not 0 <= int(value) <= high:
        raise ConfigError(f"{what}: must be a whole number from 0 to {high}, got {value!r}")
    return int(value)


def _check_member(info: zipfile.ZipInfo, label: str) -> PurePosixPath | None:
    """The safe relative path of an archive entry (None for entries to leave out), or a one-line error."""
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise SpatialForgeError(f"{label}: unsafe path {name!r} in the archive (absolute or with '..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SpatialForgeError(f"{label}: {name!r} is a symbolic link; links are not accepted")
    if path.parts and (path.parts[0] == "__MACOSX" or path.name.startswith("._")):
        return None  # macOS resource forks
    return path


def unpack_scene_zip(archive: str | Path, dest: str | Path, limits: AppLimits = AppLimits(),
                     label: str | None = None) -> Path:
    """Unpack an uploaded scene-folder zip into ``dest`` safely and return the scene folder inside it.

    The scene is the archive's root when it holds the scene files, else its single top-level folder.
    ``label`` names the upload in messages (default: the archive's file name).
    """
    from spatialforge.io.scene_folder import find_scene_dirs

    archive, dest = Path(archive), Path(dest)
    label = label or archive.name
    size = archive.stat().st_size
    if size > limits.max_upload_bytes:
        raise SpatialForgeError(f"{label}: {size / 2**20:.1f} MiB is larger than the upload limit of "
                                f"{limits.max_upload_bytes / 2**20:.0f} MiB")
    if not zipfile.is_zipfile(archive):
        raise SpatialForgeError(f"{label}: not a zip archive (upload a scene folder as .zip, a photo, or pick a "
                                "synthetic scene)")
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise SpatialForgeError(f"{label}: {len(infos)} entries, more than the limit of "
                                        f"{limits.max_members}")
            total = 0
            for info in infos:
                rel = _check_member(info, label)
                if rel is None or not rel.parts:
                    continue
                target = dest.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > limits.max_unpacked_bytes:
                            raise SpatialForgeError(f"{label}: unpacks to more than "
                                                    f"{limits.max_unpacked_bytes / 2**20:.0f} MiB (the limit)")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise SpatialForgeError(f"{label}: damaged or unsupported zip archive ({exc})") from None
    except RuntimeError as exc:  # an encrypted entry
        raise SpatialForgeError(f"{label}: cannot unpack ({exc})") from None
    dirs = find_scene_dirs(dest)
    if not dirs:
        raise SpatialForgeError(f"{label}: holds no scene folder (expected image.png, depth.png or depth.npy, "
                                "instances.png, camera.json, objects.json at its root or in one folder)")
    if len(dirs) > 1:
        names = ", ".join(d.name for d in dirs[:5]) + (" ..." if len(dirs) > 5 else "")
        raise SpatialForgeError(f"{label}: holds {len(dirs)} scene folders ({names}); upload one scene at a time")
    return dirs[0]


def _relabel(exc: SpatialForgeError, root: Path, label: str) -> SpatialForgeError:
    """The same error with the temporary folder's path replaced by the upload's name."""
    text = str(exc)
    for prefix in (str(root.resolve()), str(root)):
        text = text.replace(prefix + "/", f"{label}: ").replace(prefix, label)
    return SpatialForgeError(text)


def load_upload(path: str | Path, config: AppConfig, *, label: str | None = None) -> tuple[RGBDScene, str]:
    """An uploaded file -> (the scene, where it came from). A zip is a scene folder; an image is a photo."""
    from spatialforge.io.scene_folder import load_scene

    path = Path(path)
    label = label or path.name
    if path.suffix.lower() in PHOTO_SUFFIXES and not zipfile.is_zipfile(path):
        return load_photo(path, config, label=label), f"photo {label}"
    with tempfile.TemporaryDirectory(prefix="spatialforge-upload-") as tmp:
        root = Path(tmp)
        try:
            folder = unpack_scene_zip(path, root, config.limits, label=label)
            scene_id = folder.name if folder != root else Path(label).stem
            return load_scene(folder, scene_id=scene_id), f"scene folder {label}"
        except SpatialForgeError as exc:
            raise _relabel(exc, root, label) from None


def load_photo(path: str | Path, config: AppConfig, *, label: str | None = None, pipeline: Any = None
               ) -> RGBDScene:
    """A photo through the perception stages of ``config.perception`` (``pipeline``: one already built)."""
    from spatialforge.perception.types import ImageItem

    path = Path(path)
    label = label or path.name
    if config.perception is None and pipeline is None:
        raise SpatialForgeError(f"{label}: photos need the perception models: start the app with "
                                "`spatialforge app --config perception.toml` (docs/photos.md); without one, upload "
                                "an RGB-D scene folder as .zip or pick a synthetic scene")
    size = path.stat().st_size
    if size > config.limits.max_upload_bytes:
        raise SpatialForgeError(f"{label}: {size / 2**20:.1f} MiB is larger than the upload limit of "
                                f"{config.limits.max_upload_bytes / 2**20:.0f} MiB")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SpatialForgeError(f"{label}: not a readable image ({type(exc).__name__}: {exc})") from None
    if pipeline is None:
        from spatialforge.perception.pipeline import PerceptionPipeline

        pipeline = PerceptionPipeline.from_config(config.perception)
    scenes, failed, filtered = pipeline.process_chunk([ImageItem(Path(label).stem, rgb, source=label)])
    if scenes:
        return scenes[0][0]
    if failed:
        f = next(iter(failed.values()))
        raise SpatialForgeError(f"{label}: {getattr(f, 'message', None) or getattr(f, 'reason', 'perception failed')}")
    why = next(iter(filtered.values()), {}) if filtered else {}
    raise SpatialForgeError(f"{label}: no measurable object found ({why.get('reason', 'filtered') if why else 'none'})")


# ---------------------------------------------------------------------------------------------- analysis

def analyse_scene(scene: RGBDScene, source: str, seed: int = 0) -> SceneView:
    """Build the 3D scene graph and generate the QA of ``scene`` as ``spatialforge generate --seed`` would."""
    from spatialforge.geometry import GeometryConfig
    from spatialforge.geometry.scene_graph import build_scene_graph
    from spatialforge.qa.generator import QAConfig, generate_qa

    graph = build_scene_graph(scene, GeometryConfig(seed=seed))
    result = generate_qa(graph, QAConfig(seed=seed))
    return SceneView(scene=scene, graph=graph, references=dict(result.references), qa=list(result.qa), source=source)


def graph_rows(view: SceneView) -> list[list[Any]]:
    """One row per measured object (:data:`GRAPH_HEADERS`), metres in the gravity frame."""
    rows = []
    for o in view.graph.objects:
        x, y, z = (round(float(v), 4) for v in o.center)
        rows.append([o.id, o.caption, view.references.get(o.id, "(not referable)"), x, y, z, round(o.width, 4),
                     round(o.depth, 4), round(o.height, 4), o.size_reliable, o.footprint_reliable, o.truncated,
                     round(o.occluded_fraction, 3)])
    return rows


def qa_rows(view: SceneView) -> list[list[Any]]:
    """One row per generated QA pair (:data:`QA_HEADERS`) with its exact value."""
    rows = []
    for qa in view.qa:
        value: Any = qa.value
        if qa.kind == "yes_no":
            value = "yes" if qa.value else "no"
        elif qa.kind == "quantitative":
            value = round(float(qa.value), 4)
        rows.append([qa.type, qa.kind, qa.question, qa.answer, value, qa.unit,
                     ", ".join(str(s) for s in qa.subjects)])
    return rows


def summary_markdown(view: SceneView) -> str:
    """A few lines about the scene: where it came from, gravity, objects measured and skipped."""
    g = view.graph.gravity
    height = f", camera {g.camera_height:.2f} m above the support plane" if g.camera_height is not None else ""
    skipped = "; ".join(f"{s.id} {s.caption} ({s.reason})" for s in view.graph.skipped)
    lines = [f"**{view.scene.scene_id}** ({view.source}): {len(view.graph.objects)} objects measured, "
             f"{len(view.qa)} questions generated",
             f"gravity: {g.source}{height}" + ("" if g.reliable else " (vertical questions are skipped)")]
    if skipped:
        lines.append(f"not measured: {skipped}")
    return "  \n".join(lines)


# ---------------------------------------------------------------------------------------------- questions

# quantity -> words that ask for it (checked in this order; the first that fits the number of objects wins)
_ASKS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("clock", 2, ("o'clock", "clock")),
    ("horizontal_distance", 2, ("horizontal distance", "horizontally", "on the floor", "along the floor")),
    ("vertical_distance", 2, ("vertical distance", "vertically", "higher than", "lower than", "above", "below")),
    ("distance", 2, ("distance", "how far", "far apart", "apart", "between", "gap")),
    ("elevation", 1, ("elevation", "above the floor", "above the ground", "off the floor", "how high up")),
    ("camera_distance", 1, ("camera", "from me", "from you", "away from the viewer", "how far")),
    ("height", 1, ("how tall", "height", "how high", "tall")),
    ("width", 1, ("how wide", "width", "wide")),
    ("depth", 1, ("how deep", "depth", "deep")),
)
# comparatives over one measured quantity of two objects: word -> (quantity, larger is "yes")
_COMPARE: dict[str, tuple[str, bool]] = {
    "taller": ("height", True), "shorter": ("height", False), "wider": ("width", True),
    "narrower": ("width", False), "deeper": ("depth", True), "closer to the camera": ("camera_distance", False),
    "nearer to the camera": ("camera_distance", False), "farther from the camera": ("camera_distance", True),
    "further from the camera": ("camera_distance", True),
}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def mentioned_objects(view: SceneView, question: str) -> list[int]:
    """Ids of the objects the question names (by reference, caption or ``#id``), in the order it names them."""
    from spatialforge.qa.refer import caption_phrase

    text = f" {_norm(question)} "
    owners: dict[str, set[int]] = {}
    for o in view.graph.objects:
        for name in {view.references.get(o.id, ""), o.caption, caption_phrase(o.caption)}:
            n = _norm(name)
            for article in ("the ", "a ", "an "):
                n = n.removeprefix(article)
            if n:
                owners.setdefault(n, set()).add(o.id)
    # longest names first: "the red mug on the left" before "red mug"
    found: list[tuple[int, int]] = []
    taken = [False] * len(text)
    for name in sorted(owners, key=lambda n: (-len(n), n)):
        for m in re.finditer(rf"(?<=[ ]){re.escape(name)}(?=[ ])", text):
            if any(taken[m.start():m.end()]):
                continue
            if len(owners[name]) > 1:
                which = "; ".join(f"#{i} {view.references.get(i, '(not referable)')}" for i in sorted(owners[name]))
                raise SpatialForgeError(f"'{name}' names several objects ({which}); use the reference or #id")
            for i in range(m.start(), m.end()):
                taken[i] = True
            found.append((m.start(), next(iter(owners[name]))))
    for m in re.finditer(r"#(\d+)", question):
        found.append((len(text) + m.start(), int(m.group(1))))
    ordered: list[int] = []
    for _, oid in sorted(found):
        if oid not in ordered:
            ordered.append(oid)
    return ordered


def _fmt(value: float, unit: str) -> str:
    if unit == "m":
        return f"{value:.2f} m"
    if unit == "clock":
        return f"{int(value)} o'clock"
    return f"{value:.3g} {unit}".strip()


def answer_question(view: SceneView, question: str) -> tuple[str, list[list[Any]]]:
    """Answer a free-text question from the scene graph with the ``reason`` scene tools.

    Returns the answer text and the tool calls made (:data:`STEP_HEADERS`). The question must name one or
    two of the scene's objects (as the scene-graph table names them, or ``#id``) and ask for a quantity:
    distance (also horizontal / vertical), clock direction, height, width, depth, distance from the
    camera, elevation; or compare two objects (taller, wider, closer to the camera ...). Anything else
    raises a :class:`SpatialForgeError` saying what can be asked.
    """
    from spatialforge.reason.tools import SceneTools, ToolError

    q = _norm(question)
    if not q:
        raise SpatialForgeError("type a question about the scene, e.g. 'How far is the chair from the table?'")
    tools = SceneTools(view.graph, view.references)
    ids = mentioned_objects(view, question)
    unknown = [i for i in ids if i not in {o.id for o in view.graph.objects}]
    if unknown:
        raise SpatialForgeError(f"no object #{unknown[0]} in this scene; the objects are "
                                + "; ".join(f"#{o.id} {view.references.get(o.id, o.caption)}"
                                            for o in view.graph.objects))
    steps: list[list[Any]] = []

    def measure(quantity: str, *objs: int) -> dict[str, Any]:
        try:
            result = tools.measure(quantity, *objs)
        except ToolError as exc:
            raise SpatialForgeError(str(exc)) from None
        steps.append(["measure", f"{quantity}, " + ", ".join(f"#{i}" for i in objs), round(result["value"], 4),
                      result["unit"]])
        return result

    def name(i: int) -> str:
        return view.references.get(i) or view.graph.object(i).caption

    note = ""
    if len(ids) >= 2:
        for word, (quantity, larger) in _COMPARE.items():
            if f" {word} " in f" {q} ":
                a, b = measure(quantity, ids[0]), measure(quantity, ids[1])
                yes = (a["value"] > b["value"]) == larger
                verdict = name(ids[0] if yes else ids[1]) if q.startswith("which") else ("Yes" if yes else "No")
                answer = (f"{verdict[:1].upper() + verdict[1:]}: {name(ids[0])} {_fmt(a['value'], a['unit'])}, "
                          f"{name(ids[1])} {_fmt(b['value'], b['unit'])} ({quantity.replace('_', ' ')})")
                return answer + _vertical_note(a, b), steps
    for quantity, arity, words in _ASKS:
        if len(ids) < arity or not any(f" {w} " in f" {q} " for w in words):
            continue
        if len(ids) > arity:
            note = f" (the question names {len(ids)} objects; measured the first {arity})"
        r = measure(quantity, *ids[:arity])
        who = " and ".join(name(i) for i in ids[:arity])
        if quantity == "clock":
            text = f"{name(ids[1])} is at {_fmt(r['value'], 'clock')} from {name(ids[0])}"
        else:
            of = "between" if arity == 2 else "of"
            text = f"{quantity.replace('_', ' ')} {of} {who}: {_fmt(r['value'], r['unit'])}"
        return text[:1].upper() + text[1:] + note + _vertical_note(r), steps
    objects = "; ".join(f"#{o.id} {name(o.id)}" for o in view.graph.objects) or "none"
    if not ids:
        raise SpatialForgeError(f"the question names none of the scene's objects; name one or two of: {objects}")
    raise SpatialForgeError("cannot tell what to measure: ask for a distance (also horizontal or vertical), the "
                            "clock direction, height, width, depth, distance from the camera or elevation, or "
                            "compare two objects (taller, wider, closer to the camera)")


def _vertical_note(*results: dict[str, Any]) -> str:
    if any(r.get("note") == "vertical_unreliable" for r in results):
        return " (the vertical comes from the camera prior: no support plane was found)"
    return ""


# ---------------------------------------------------------------------------------------------- affordance

def affordance(view: SceneView, action: str, predictor: Any) -> tuple[Image.Image, dict[str, Any]]:
    """The AffordanceCLIP heatmap of ``action`` over the scene's image, and its hottest 3D point.

    The point is the pixel of highest heat that has valid depth, back-projected and put in the gravity
    frame of the scene graph; ``object`` is the measured object whose mask holds it (None: background).
    """
    from spatialforge.viz import render_heatmap

    action = " ".join(str(action or "").split())
    if not action:
        raise SpatialForgeError("type an action, e.g. 'pour', 'cut with', 'hold'")
    scene = view.scene
    heat = np.asarray(predictor.predict([scene.image], [action])[0][0], dtype=np.float64)
    valid = scene.depth > 0
    if not valid.any():
        raise SpatialForgeError(f"{scene.scene_id}: no pixel has valid depth")
    masked = np.where(valid, heat, -np.inf)
    v, u = np.unravel_index(int(np.argmax(masked)), masked.shape)
    k = scene.intrinsics
    z = float(scene.depth[v, u])
    cam = np.array([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z])
    point = view.graph.gravity.to_canonical(cam[None])[0]
    oid = int(scene.instances[v, u])
    measured = {o.id for o in view.graph.objects}
    info = {"action": action, "pixel": [int(u), int(v)], "heat": round(float(heat[v, u]), 4),
            "point": [round(float(c), 4) for c in point],
            "object": oid if oid in measured else None,
            "object_name": (view.references.get(oid) or view.graph.object(oid).caption) if oid in measured else None}
    return render_heatmap(scene.image, np.clip(heat, 0, 1), title=f"'{action}'"), info
