"""What the web app does, without Gradio: load a scene, analyse it, answer questions, show affordances.

Every function here is plain Python (numpy, PIL, the spatialforge stages), so it is tested without a
browser. A problem with what a user gave (a bad upload, an unknown object in a question) raises a
:class:`~spatialforge.errors.SpatialForgeError` whose one-line message the page shows in its error box;
the messages are those of the CLI (``load_scene``'s reasons), with the temporary folder an upload is
unpacked into replaced by the upload's own name.

Uploads are unpacked by :func:`unpack_scene_zip`: no absolute names, no ``..``, no links, at most
:attr:`AppLimits.max_members` entries and :attr:`AppLimits.max_unpacked_bytes` bytes (counted while
reading, not taken from the archive's headers).

Models (the perception pipeline, the AffordanceCLIP predictor, the VLM) are held by :class:`AppModels`:
each is built at its first use, once per app, under its own lock, and shared by every browser session.
"""

from __future__ import annotations

import io
import math
import re
import stat
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from spatialforge.core.types import QAPair, RGBDScene, SceneGraph
from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = [
    "AFFORD_HEADERS",
    "AffordanceView",
    "AppConfig",
    "AppLimits",
    "AppModels",
    "SceneAnswer",
    "SceneView",
    "VLMAnswer",
    "affordance",
    "analyse_scene",
    "answer_question",
    "ask_vlm",
    "build_vlm",
    "graph_rows",
    "load_photo",
    "load_synthetic",
    "load_upload",
    "qa_rows",
    "scene_answer",
    "unpack_scene_zip",
]

GRAPH_HEADERS = ["id", "caption", "reference", "x (m)", "y (m)", "z (m)", "width (m)", "depth (m)", "height (m)",
                 "size reliable", "footprint reliable", "truncated", "occluded"]
QA_HEADERS = ["type", "kind", "question", "answer", "value", "unit", "subjects"]
STEP_HEADERS = ["tool", "arguments", "value", "unit"]
AFFORD_HEADERS = ["object", "region pixels", "area (cm^2)", "mean heat", "interaction pixel (u, v)", "x (m)", "y (m)",
                  "z (m)", "approach (gravity frame)", "approach"]
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
    ``vlm``: a model spec as ``spatialforge eval run --model`` takes (``openai:MODEL[@BASE_URL]``,
    ``hf:MODEL_ID_OR_FOLDER``, ``prior``) whose answers the Ask tab shows beside the scene graph's, built
    with ``vlm_options`` (``api_key_env``, ``timeout``, ``max_retries``, ``dtype``; None: the backend's
    default); ``device``: where the models run; ``seed``: the QA and geometry seed (as ``generate --seed``).
    """

    perception: Any = None
    perception_source: str | None = None
    afford_checkpoint: Path | None = None
    vlm: str | None = None
    vlm_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    limits: AppLimits = field(default_factory=AppLimits)


def build_vlm(config: AppConfig) -> Any:
    """The VLM of ``config.vlm`` built as ``spatialforge reason --vlm`` builds it (nothing loads here).

    The backend asks the text it is given verbatim (prompt style ``plain``); :func:`ask_vlm` gives it the
    evaluation's prompt for the question's kind. A bad spec or option is a ConfigError naming ``--vlm``.
    """
    from spatialforge.eval.models import build_vlm as build

    if not config.vlm:
        raise ConfigError("--vlm: no VLM is configured")
    o = config.vlm_options
    return build(config.vlm, api_key_env=o.get("api_key_env"), timeout_s=o.get("timeout"),
                 max_retries=o.get("max_retries"), device=config.device, dtype=o.get("dtype"))


class AppModels:
    """The app's models, each built at its first use, once per app, under its own lock (shared by sessions).

    :meth:`perception` (the photo pipeline of ``config.perception``), :meth:`afford` (the AffordanceCLIP
    predictor of ``config.afford_checkpoint``), :meth:`vlm` (the VLM of ``config.vlm``, its weights loaded).
    A build that fails raises (one line) and is tried again at the next use. ``builds`` counts the builds
    that succeeded, per model (never more than one each). :meth:`using` serialises the runs of a model that
    is not safe to run from two sessions at once (the perception stages, a local model).
    """

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.builds: Counter[str] = Counter()
        self._made: dict[str, Any] = {}
        self._build_locks = {name: threading.Lock() for name in ("perception", "afford", "vlm")}
        self._run_locks = {name: threading.Lock() for name in ("perception", "afford", "vlm")}

    def _get(self, name: str, build: Any) -> Any:
        with self._build_locks[name]:
            if name not in self._made:
                self._made[name] = build()
                self.builds[name] += 1
            return self._made[name]

    @contextmanager
    def using(self, name: str) -> Iterator[None]:
        """Hold model ``name`` for one run (one session at a time)."""
        with self._run_locks[name]:
            yield

    def perception(self) -> Any:
        if self.config.perception is None:
            raise SpatialForgeError("photos need the perception models: start the app with `spatialforge app "
                                    "--config perception.toml` (docs/photos.md)")

        def build() -> Any:
            from spatialforge.perception.pipeline import PerceptionPipeline

            return PerceptionPipeline.from_config(self.config.perception)

        return self._get("perception", build)

    def afford(self) -> Any:
        if self.config.afford_checkpoint is None:
            raise SpatialForgeError(NO_AFFORD)

        def build() -> Any:
            from spatialforge.afford.predict import AffordancePredictor

            return AffordancePredictor.from_checkpoint(str(self.config.afford_checkpoint), device=self.config.device)

        return self._get("afford", build)

    def vlm(self) -> Any:
        if not self.config.vlm:
            raise SpatialForgeError(NO_VLM)

        def build() -> Any:
            model = build_vlm(self.config)
            load = getattr(model, "load", None)
            if callable(load):  # a local model: its weights load now, once
                load()
            return model

        return self._get("vlm", build)


NO_AFFORD = ("No AffordanceCLIP checkpoint is configured: start the app with `--afford-checkpoint FOLDER` (a "
             "checkpoint of `spatialforge afford train`, docs/affordance.md) to see heatmaps here.")
NO_VLM = ("No VLM is configured: start the app with `--vlm SPEC` (openai:MODEL[@BASE_URL], hf:MODEL_ID_OR_FOLDER "
          "or prior, as `spatialforge eval run --model`) to see its answer beside the scene graph's.")


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


def load_upload(path: str | Path, config: AppConfig, *, label: str | None = None,
                models: AppModels | None = None) -> tuple[RGBDScene, str]:
    """An uploaded file -> (the scene, where it came from). A zip is a scene folder; an image is a photo.

    ``models``: the app's :class:`AppModels`, whose perception pipeline (built once per app) reads photos.
    """
    from spatialforge.io.scene_folder import load_scene

    path = Path(path)
    label = label or path.name
    if path.suffix.lower() in PHOTO_SUFFIXES and not zipfile.is_zipfile(path):
        return load_photo(path, config, label=label, models=models), f"photo {label}"
    with tempfile.TemporaryDirectory(prefix="spatialforge-upload-") as tmp:
        root = Path(tmp)
        try:
            folder = unpack_scene_zip(path, root, config.limits, label=label)
            scene_id = folder.name if folder != root else Path(label).stem
            return load_scene(folder, scene_id=scene_id), f"scene folder {label}"
        except SpatialForgeError as exc:
            raise _relabel(exc, root, label) from None


def load_photo(path: str | Path, config: AppConfig, *, label: str | None = None, pipeline: Any = None,
               models: AppModels | None = None) -> RGBDScene:
    """A photo through the perception stages of ``config.perception``.

    The photo is read as ``spatialforge generate`` reads photos (EXIF orientation and focal length, alpha
    on white, the config's pixel limits), so an unreadable or too small image gets the same one-line
    reason, before any model is built. ``pipeline``: one already built; else ``models.perception()`` (the
    app's, built once per app, run by one session at a time); else one is built for this call.
    """
    from spatialforge.perception.image_io import ItemFailure, load_image_file

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
    pconf = config.perception if config.perception is not None else pipeline.config
    item = load_image_file(path, _photo_id(label), pconf.limits, pconf.focal_length_px, source=label)
    if isinstance(item, ItemFailure):
        raise SpatialForgeError(item.message)
    if pipeline is not None:
        scenes, failed, filtered = pipeline.process_chunk([item])
    elif models is not None:
        pipe = models.perception()
        with models.using("perception"):
            scenes, failed, filtered = pipe.process_chunk([item])
    else:
        from spatialforge.perception.pipeline import PerceptionPipeline

        scenes, failed, filtered = PerceptionPipeline.from_config(config.perception).process_chunk([item])
    if scenes:
        return scenes[0][0]
    if failed:
        message = next(iter(failed.values())).message  # "<label>: <why>", as `spatialforge generate` records it
        raise SpatialForgeError(message if message.startswith(f"{label}:") else f"{label}: {message}")
    decision = next(iter(filtered.values()), {}).get("decision") or {}
    raise SpatialForgeError(f"{label}: left out by the photo filter (its label: {decision.get('label') or 'none'}; "
                            "see the filter options in docs/photos.md)")


def _photo_id(label: str) -> str:
    from spatialforge.perception.image_io import safe_id

    return safe_id(Path(label).stem)


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
# comparatives over one measured quantity of two objects: word -> (quantity, larger is "yes", the QA catalogue's
# yes/no and choice types of that comparison; the evaluation's parser reads a reply by them)
_COMPARE: dict[str, tuple[str, bool, str, str]] = {
    "taller": ("height", True, "tall_predicate", "tall_choice"),
    "shorter": ("height", False, "short_predicate", "short_choice"),
    "wider": ("width", True, "wide_predicate", "wide_choice"),
    "narrower": ("width", False, "thin_predicate", "thin_choice"),
    "deeper": ("depth", True, "deeper_predicate", "deeper_choice"),
    "closer to the camera": ("camera_distance", False, "front_predicate", "close_choice"),
    "nearer to the camera": ("camera_distance", False, "front_predicate", "close_choice"),
    "farther from the camera": ("camera_distance", True, "behind_predicate", "far_choice"),
    "further from the camera": ("camera_distance", True, "behind_predicate", "far_choice"),
}
# measured quantity -> the QA catalogue's type of the same question
_QUANTITY_TYPES = {"clock": "clock_direction"}


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


@dataclass(frozen=True)
class SceneAnswer:
    """The scene graph's answer to a question, and what the question asks, as the evaluation describes one.

    ``text``: the answer in words; ``steps``: the tool calls made (:data:`STEP_HEADERS`); ``kind``,
    ``unit``, ``type``: as a QA pair's (``quantitative`` in ``m`` or ``clock``, ``yes_no`` in ``bool``,
    ``choice`` in ``option``; ``type`` a QA catalogue id such as ``distance`` or ``tall_predicate``);
    ``value``: metres, an hour, a bool or the index of the right option; ``options``: for a choice, the
    two objects' names; ``subjects``: the names of the objects asked about, in the question's order.
    """

    text: str
    steps: list[list[Any]]
    kind: str
    unit: str
    type: str
    value: float | int | bool
    options: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()


def answer_question(view: SceneView, question: str) -> tuple[str, list[list[Any]]]:
    """The answer text and the tool calls of :func:`scene_answer`."""
    answer = scene_answer(view, question)
    return answer.text, answer.steps


def scene_answer(view: SceneView, question: str) -> SceneAnswer:
    """Answer a free-text question from the scene graph with the ``reason`` scene tools.

    The question must name one or two of the scene's objects (as the scene-graph table names them, or
    ``#id``) and ask for a quantity: distance (also horizontal / vertical), clock direction, height,
    width, depth, distance from the camera, elevation; or compare two objects (taller, wider, closer to
    the camera ...; "Which ..." makes it a choice, else a yes/no question). Anything else raises a
    :class:`SpatialForgeError` saying what can be asked.
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
        for word, (quantity, larger, predicate, choice) in _COMPARE.items():
            if f" {word} " in f" {q} ":
                a, b = measure(quantity, ids[0]), measure(quantity, ids[1])
                yes = (a["value"] > b["value"]) == larger
                which = q.startswith("which")
                verdict = name(ids[0] if yes else ids[1]) if which else ("Yes" if yes else "No")
                text = (f"{verdict[:1].upper() + verdict[1:]}: {name(ids[0])} {_fmt(a['value'], a['unit'])}, "
                        f"{name(ids[1])} {_fmt(b['value'], b['unit'])} ({quantity.replace('_', ' ')})")
                subjects = (name(ids[0]), name(ids[1]))
                if which:
                    return SceneAnswer(text + _vertical_note(a, b), steps, "choice", "option", choice,
                                       0 if yes else 1, options=subjects, subjects=subjects)
                return SceneAnswer(text + _vertical_note(a, b), steps, "yes_no", "bool", predicate, bool(yes),
                                   subjects=subjects)
    for quantity, arity, words in _ASKS:
        if len(ids) < arity or not any(f" {w} " in f" {q} " for w in words):
            continue
        if len(ids) > arity:
            note = f" (the question names {len(ids)} objects; measured the first {arity})"
        r = measure(quantity, *ids[:arity])
        who = " and ".join(name(i) for i in ids[:arity])
        if quantity == "clock":
            text = f"{name(ids[1])} is at {_fmt(r['value'], 'clock')} from {name(ids[0])}"
            value: float | int = int(r["value"])
        else:
            of = "between" if arity == 2 else "of"
            text = f"{quantity.replace('_', ' ')} {of} {who}: {_fmt(r['value'], r['unit'])}"
            value = float(r["value"])
        return SceneAnswer(text[:1].upper() + text[1:] + note + _vertical_note(r), steps, "quantitative",
                           "clock" if quantity == "clock" else "m", _QUANTITY_TYPES.get(quantity, quantity), value,
                           subjects=tuple(name(i) for i in ids[:arity]))
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


# ---------------------------------------------------------------------------------------------- VLM

_MAX_REPLY_CHARS = 600


@dataclass(frozen=True)
class VLMAnswer:
    """A VLM's answer to the question the scene graph answered (or could not read).

    ``sent``: the text the VLM got (the question with ``#id`` replaced by the object's name, plus the
    evaluation's answer-format instruction when the kind is known); ``reply``: its raw reply (None on an
    error); ``error``: one line; ``parsed``: what :func:`spatialforge.eval.answers.parse_answer` reads from
    the reply (None when the question was not read by the scene graph: there is nothing to compare);
    ``record``: :func:`spatialforge.eval.metrics.score_item` against the scene-graph value; ``verdict``:
    one line comparing both ("1.30 m: 27 % more than the measured 1.02 m").
    """

    model: str
    sent: str
    reply: str | None
    error: str | None = None
    parsed: Any = None
    record: dict[str, Any] | None = None
    verdict: str = ""


def _vlm_question(view: SceneView, question: str) -> str:
    """The question as a VLM can read it: ``#id`` becomes the object's name (the VLM sees no ids)."""
    objects = {o.id: (view.references.get(o.id) or o.caption) for o in view.graph.objects}
    text = re.sub(r"#(\d+)", lambda m: objects.get(int(m.group(1)), m.group(0)), " ".join(question.split()))
    return text


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def ask_vlm(view: SceneView, question: str, model: Any, answer: SceneAnswer | None = None) -> VLMAnswer:
    """Ask ``model`` (a :class:`~spatialforge.eval.models.VQAModel`) ``question`` about the scene's image.

    With ``answer`` (the scene graph's), the VLM gets the evaluation's prompt for that kind of question
    (:func:`~spatialforge.eval.models.base.build_prompt`) and its reply is read by the evaluation's parser
    and scored against the scene-graph value. Without it (a question the scene graph cannot read) the
    question goes verbatim and the reply is only shown. A failure (server down, timeout, a model that
    cannot load) is :attr:`VLMAnswer.error`, one line; it never raises for those.
    """
    from dataclasses import replace

    from spatialforge.eval.answers import parse_answer
    from spatialforge.eval.metrics import score_item
    from spatialforge.eval.models.base import build_prompt
    from spatialforge.eval.types import BenchmarkItem

    name = str(getattr(model, "name", "VLM"))
    text = _vlm_question(view, question)
    if answer is None:
        item = BenchmarkItem(id=f"{view.scene.scene_id}-question", benchmark="spatialforge-app", question=text,
                             kind="quantitative", type="question", truth=1.0, unit="m",
                             image_bytes=_png(view.scene.image))
    else:
        item = BenchmarkItem(id=f"{view.scene.scene_id}-{answer.type}", benchmark="spatialforge-app", question=text,
                             kind=answer.kind, type=answer.type, truth=answer.value, unit=answer.unit,
                             options=answer.options, image_bytes=_png(view.scene.image),
                             meta={"names": list(answer.subjects), "roles": ["A", "B"][:len(answer.subjects)]})
    sent = item
    if answer is not None and getattr(model, "prompt_style", None) == "plain":
        # the backend sends its text verbatim: give it the evaluation's prompt (question + answer format)
        sent = replace(item, question=build_prompt(item, "default"))
    try:
        replies = model.answer([sent])
    except (SpatialForgeError, OSError) as exc:
        return VLMAnswer(name, sent.question, None, error=_one_line(exc))
    reply = replies[0] if replies else None
    if reply is None or not reply.ok:
        why = reply.error if reply is not None and reply.error else "no reply"
        return VLMAnswer(name, sent.question, None, error=_one_line(why))
    raw = str(reply.text)
    if answer is None:
        return VLMAnswer(name, sent.question, raw, verdict="not compared: the scene graph could not read the question")
    parsed = parse_answer(raw, answer.kind, answer.unit, answer.options, question=text, qtype=answer.type,
                          subjects=answer.subjects)
    record = score_item(item, parsed, raw)
    return VLMAnswer(name, sent.question, raw, parsed=parsed, record=record, verdict=_verdict(answer, parsed, record))


def _verdict(answer: SceneAnswer, parsed: Any, record: dict[str, Any]) -> str:
    """One line: what the parser read from the reply, compared with the scene-graph value."""
    if not parsed.answered or record.get("value") is None:
        return f"the evaluation's parser reads no answer from the reply ({parsed.status})"
    value, truth = record["value"], answer.value
    rng = " (the middle of the range it gives)" if parsed.status == "range" else ""
    if answer.kind == "quantitative" and answer.unit == "clock":
        hour, err = record.get("hour"), record.get("hour_err")
        if err == 0:
            return f"{hour} o'clock{rng}: the same as the measured {truth} o'clock"
        return f"{hour} o'clock{rng}: {err} hour{'s' if err != 1 else ''} off the measured {truth} o'clock"
    if answer.kind == "quantitative":
        v, t = float(value), float(truth)
        if t <= 0:
            return f"{v:.2f} m{rng}: {v - t:+.2f} m from the measured {t:.2f} m"
        pct = (v - t) / t * 100
        if abs(pct) < 0.5:
            return f"{v:.2f} m{rng}: the same as the measured {t:.2f} m"
        return f"{v:.2f} m{rng}: {abs(pct):.0f} % {'more' if pct > 0 else 'less'} than the measured {t:.2f} m"
    if answer.kind == "yes_no":
        said, truth_word = ("yes" if value else "no"), ("yes" if truth else "no")
        agree = "agrees with" if bool(value) == bool(truth) else "disagrees with"
        return f"{said}: {agree} the scene graph ({truth_word})"
    said, want = answer.options[int(value)], answer.options[int(truth)]
    agree = "agrees with" if int(value) == int(truth) else "disagrees with"
    return f"{said}: {agree} the scene graph ({want})"


def short_reply(text: str) -> str:
    """A reply on one line, cut to a readable length."""
    line = _one_line(text)
    return line if len(line) <= _MAX_REPLY_CHARS else line[:_MAX_REPLY_CHARS] + " ..."


# ---------------------------------------------------------------------------------------------- affordance

@dataclass
class AffordanceView:
    """An action's AffordanceCLIP heatmap over a scene, lifted into 3D per object.

    ``heat``: the (H, W) heatmap in [0, 1]; ``regions``: :func:`spatialforge.afford.lift.lift_affordance`'s
    regions (gravity frame of the scene graph, one per object the region touches, sorted by id);
    ``image``: the heatmap over the photo, in units of its peak (with valid depth: the regions are
    fractions of it), with each region's interaction pixel marked and numbered by its object id;
    ``names``: object id -> how the page names it; ``peak``: the heatmap's maximum over the pixels with valid
    depth, which ``relative_threshold`` is a fraction of (as in ``lift_affordance``).
    """

    action: str
    heat: np.ndarray
    regions: list[Any]
    image: Image.Image
    names: dict[int, str]
    relative_threshold: float
    peak: float = 1.0

    def rows(self) -> list[list[Any]]:
        """One row per region (:data:`AFFORD_HEADERS`): area in cm^2, the interaction point and approach in m."""
        out = []
        for r in self.regions:
            x, y, z = (round(float(c), 4) for c in r.interaction_point)
            ax, ay, az = (round(float(c), 3) for c in r.approach)
            out.append([self.names.get(r.object_id, f"#{r.object_id}"), r.n_pixels, round(r.area_m2 * 1e4, 2),
                        round(float(r.heat.mean()), 3), f"({r.pixel[0]}, {r.pixel[1]})", x, y, z,
                        f"({ax:+.3f}, {ay:+.3f}, {az:+.3f})", direction_words(r.approach)])
        return out


_DIRECTIONS = (("right", "left"), ("forward (away from the camera)", "towards the camera"), ("up", "down"))


def direction_words(v: Any) -> str:
    """A unit vector of the gravity frame in words: its main components, largest first ("down, forward")."""
    v = np.asarray(v, dtype=np.float64)
    order = np.argsort(-np.abs(v), kind="stable")
    words = [_DIRECTIONS[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) >= 0.35]
    return ", ".join(words) or "none"


def check_threshold(value: Any) -> float:
    """The region threshold as a fraction of the heatmap's peak, in (0, 1]; a one-line error otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 < float(value) <= 1.0:
        raise ConfigError(f"region threshold: must be a fraction of the peak heat in (0, 1], got {value!r}")
    return float(value)


def affordance(view: SceneView, action: str, predictor: Any, relative_threshold: Any = 0.5) -> AffordanceView:
    """The AffordanceCLIP heatmap of ``action`` over the scene's image, lifted into 3D per object.

    The heatmap is lifted with the scene's depth, intrinsics and masks into the gravity frame of the scene
    graph (:func:`~spatialforge.afford.lift.lift_affordance`, as ``afford predict --depth`` does): per
    object, the region of pixels with heat at least ``relative_threshold`` times the peak, its area, the
    interaction point (heat-weighted, snapped to the surface), the normal and the approach direction.
    Raises a one-line :class:`SpatialForgeError` for an empty action, a bad threshold, a scene without
    valid depth, or a heatmap with no region on any object.
    """
    from spatialforge.afford.lift import lift_affordance
    from spatialforge.viz import render_heatmap

    action = " ".join(str(action or "").split())
    if not action:
        raise SpatialForgeError("type an action, e.g. 'pour', 'cut with', 'hold'")
    threshold = check_threshold(relative_threshold)
    scene = view.scene
    if not (scene.depth > 0).any():
        raise SpatialForgeError(f"{scene.scene_id}: no pixel has valid depth")
    heat = np.clip(np.nan_to_num(np.asarray(predictor.predict([scene.image], [action])[0][0], dtype=np.float64)),
                   0.0, 1.0)
    regions = lift_affordance(heat, scene.depth, scene.intrinsics, view.graph.gravity,
                              instances=scene.instances.astype(np.int64), relative_threshold=threshold)
    names = {r.object_id: _object_name(view, r.object_id) for r in regions}
    peak = float(heat[scene.depth > 0].max())  # the threshold's reference, as in lift_affordance
    if not regions:
        raise SpatialForgeError(f"'{action}': no object has a region of at least 3 pixels with heat >= "
                                f"{threshold:g} x the peak ({peak:.2f}, over pixels with valid depth) and valid depth; "
                                "lower the region threshold")
    image = render_heatmap(scene.image, heat / peak, title=f"'{action}': heat / its peak {peak:.3g}")
    _mark(image, regions)
    return AffordanceView(action, heat, regions, image, names, threshold, peak)


def _object_name(view: SceneView, oid: int) -> str:
    """``#id`` and how the page names an object; one the scene graph did not measure says so."""
    if oid in {o.id for o in view.graph.objects}:
        return f"#{oid} {view.references.get(oid) or view.graph.object(oid).caption}"
    caption = next((o.caption for o in view.scene.objects if o.id == oid), "object")
    return f"#{oid} {caption} (not measured)"


def _mark(image: Image.Image, regions: list[Any]) -> None:
    """Mark each region's interaction pixel on ``image``: a white-edged ring with a cross, and its object id."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    r = max(4, round(min(image.size) / 60))
    for reg in regions:
        u, v = reg.pixel
        draw.ellipse((u - r - 1, v - r - 1, u + r + 1, v + r + 1), outline=(255, 255, 255), width=2)
        draw.ellipse((u - r, v - r, u + r, v + r), outline=(0, 0, 0), width=1)
        draw.line((u - r, v, u + r, v), fill=(0, 0, 0), width=1)
        draw.line((u, v - r, u, v + r), fill=(0, 0, 0), width=1)
        draw.text((u + r + 2, v - r - 2), f"#{reg.object_id}", fill=(255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0))
