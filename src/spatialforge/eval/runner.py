"""Evaluation runs: ask a model every question (resumable), or score answers produced elsewhere.

A run folder holds ``records.jsonl`` (one scored record per question, appended chunk by chunk
and flushed, so an interrupted run loses at most the chunk in flight), ``summary.json`` and
``summary.md`` (metrics with bootstrap confidence intervals, overall, per kind and per type) and
``run.json`` (the benchmark, the model's settings, counts, timings). Re-running the same command
skips every question that already has an answer; questions whose model call failed are asked
again. Records are keyed by the QA ``id``; when an id appears twice, the last record wins.

``fingerprint.json`` (which benchmark, model and image setting the answers belong to) is written
with the first answers, so a run whose model fails on its first call leaves no half-claimed
folder. The model part is its name and its ``fingerprint()`` (the weights' file signatures or hub
commit, the endpoint, the generation settings, the prompt: :mod:`spatialforge.eval.models.fingerprint`),
so retraining an adapter in place, another endpoint URL or other generation settings are refused
with one line saying what changed, never resumed with the old answers.

:func:`run_eval` and :func:`score_answers` write into the folder they are given; the
``spatialforge eval`` commands first claim it with :func:`spatialforge.io.outdir.prepare_output_dir`
(kinds :data:`RUN_OUTPUT` and :data:`SCORE_OUTPUT`, which list every top-level entry they write).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialforge._text import count
from spatialforge.errors import ConfigError, DatasetError
from spatialforge.eval.answers import item_subjects, parse_answer
from spatialforge.eval.metrics import score_item, summarize, write_summary
from spatialforge.eval.models.base import POINT_INSTRUCTION
from spatialforge.eval.models.fingerprint import fingerprint_changes
from spatialforge.eval.types import BenchmarkItem, ParsedAnswer
from spatialforge.io.dataset import atomic_write_json
from spatialforge.io.outdir import OutputKind, atomic_path

__all__ = ["RUN_OUTPUT", "SCORE_OUTPUT", "read_answers", "read_records", "record_for", "run_eval", "score_answers",
           "selection_of"]

RECORDS = "records.jsonl"
FINGERPRINT = "fingerprint.json"
#: what ``eval run`` writes in its folder (``--overwrite`` deletes exactly these)
RUN_OUTPUT = OutputKind("eval-run", (RECORDS, FINGERPRINT, "summary.json", "summary.md", "run.json"))
#: what ``eval score`` writes in its folder
SCORE_OUTPUT = OutputKind("eval-score", (RECORDS, "summary.json", "summary.md"))


def record_for(item: BenchmarkItem, text: str | None, error: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse (with the item's question, type and compared objects, and for points the image size) and score
    one answer.

    A failed model call counts as unanswered, with its error.
    """
    meta = item.meta if isinstance(item.meta, dict) else dict(item.meta or {})
    parsed = (parse_answer(text, item.kind, item.unit, item.options, question=item.question, qtype=item.type,
                           subjects=item_subjects(item), image_size=meta.get("image_size"))
              if text is not None and error is None
              else ParsedAnswer("no_answer", flags=("model_error",) if error else ("missing",)))
    rec = score_item(item, parsed, text or "")
    if error is not None:
        rec["error"] = error
    if extra:
        rec.update(extra)
    return rec


def read_records(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Records by id (last wins). A torn last line (an interrupted write) is ignored."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the run was interrupted mid-write
                continue
            raise DatasetError(f"{path}:{n}: not a JSON record", path=str(path)) from None
        if isinstance(rec, dict) and "id" in rec:
            out[str(rec["id"])] = rec
    return out


def _append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rewrite(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records`` through a temporary file (umask permissions, never half written)."""
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")


def _fingerprint(benchmark: Any, model: Any, use_image: bool) -> dict[str, Any]:
    """What a run folder's answers belong to: the questions and truths (with, for point questions, the point
    answer instruction), the model (its name and its ``fingerprint()``: weights, endpoint, generation settings,
    prompt), the image setting."""
    h = hashlib.sha256()
    for it in benchmark.items:
        key = [it.id, it.question, it.truth, it.unit, list(it.options)]
        if it.kind == "point":  # the point answer format (not in the prompt digest: see _template_digest)
            key.append(POINT_INSTRUCTION)
        h.update(json.dumps(key, default=str).encode())
    identity = getattr(model, "fingerprint", None)
    regions = (getattr(benchmark, "info", None) or {}).get("regions") or {}
    marks = {k: regions[k] for k in ("mode", "marks_version") if k in regions} or None  # how images are drawn on
    fingerprint = {"benchmark": benchmark.name, "image_marks": marks, "items": len(benchmark.items),
                   "items_sha256": h.hexdigest()[:16],
                   "model": model.name, "model_fingerprint": identity() if callable(identity) else None,
                   "use_image": use_image}
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from fingerprint.json


def _mismatch(previous: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between the fingerprint of the answers in a folder and this run's, in one phrase ("" if
    nothing does)."""
    reasons = []
    if any(previous.get(k) != now[k] for k in ("benchmark", "image_marks", "items", "items_sha256")):
        if previous.get("benchmark") != now["benchmark"]:
            what = f"{previous.get('benchmark')} -> {now['benchmark']}"
        elif previous.get("image_marks") != now["image_marks"]:
            what = f"the regions drawn on its images: {previous.get('image_marks')} -> {now['image_marks']}"
        elif previous.get("items") != now["items"]:
            what = f"{previous.get('items')} -> {now['items']} questions"
        else:
            what = "its questions or truths differ"
        reasons.append(f"the benchmark changed ({what})")
    if previous.get("model") != now["model"]:
        reasons.append(f"the model changed ({previous.get('model')} -> {now['model']})")
    elif "model_fingerprint" not in previous and now["model_fingerprint"] is not None:
        reasons.append("the model's weights and settings were not recorded (the folder was written by an older "
                       "spatialforge)")
    elif previous.get("model_fingerprint") != now["model_fingerprint"]:
        changes = fingerprint_changes(previous["model_fingerprint"], now["model_fingerprint"])
        reasons.append(f"the model changed ({'; '.join(changes)})")
    if previous.get("use_image") != now["use_image"]:
        reasons.append("the image setting changed (" + " -> ".join(
            "with the image" if v else "without the image" for v in (previous.get("use_image"), now["use_image"]))
            + ")")
    return ", ".join(reasons)


def _rescored(benchmark: Any, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored answers scored again against the current items (the parser may have improved)."""
    out = []
    for it in benchmark.items:
        rec = records.get(it.id)
        if rec is None:
            continue
        extra = {k: rec[k] for k in ("latency_s", "model") if k in rec}
        out.append(record_for(it, None if rec.get("error") else rec.get("answer"), rec.get("error"), extra))
    return out


def run_eval(benchmark: Any, model: Any, out_dir: str | os.PathLike[str], *, chunk_size: int = 32,
             use_image: bool = True, progress: bool = True, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Ask ``model`` every question of ``benchmark`` not yet answered in ``out_dir``; score; summarise.

    A folder that holds answers of another model, benchmark or image setting is refused (its
    ``fingerprint.json`` differs): use a new folder. The fingerprint is written with the first
    answers: when the model fails on its first call, nothing of this run is left in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORDS
    fp_path = out / FINGERPRINT
    fingerprint = _fingerprint(benchmark, model, use_image)
    if path.exists() and fp_path.is_file():
        try:
            previous = json.loads(fp_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise DatasetError(f"{fp_path}: unreadable; use a new --out or --overwrite", path=str(fp_path)) from None
        reason = _mismatch(previous if isinstance(previous, dict) else {}, fingerprint)
        if reason:
            raise ConfigError(f"{out}: cannot resume: {reason}; use a new --out or --overwrite")
    claimed = False

    def claim() -> None:  # the folder's answers belong to this run from the first answer on
        nonlocal claimed
        if not claimed:
            atomic_write_json(fp_path, fingerprint)
            claimed = True

    done = read_records(path)
    if path.exists():  # compact: one line per id, a torn last line dropped (also when nothing parsed)
        _rewrite(path, done.values())
    todo = [it for it in benchmark.items if it.id not in done or done[it.id].get("error")]
    resumed = len(benchmark.items) - len(todo)
    start = time.perf_counter()
    errors: Counter[str] = Counter()
    bar = tqdm(total=len(benchmark.items), initial=resumed, desc=f"eval {model.name}", unit="q",
               disable=not progress, file=sys.stderr)
    for s in range(0, len(todo), chunk_size):
        chunk = todo[s:s + chunk_size]
        answers = model.answer(chunk, progress=False, use_image=use_image)
        if len(answers) != len(chunk):
            raise DatasetError(f"model {model.name} returned {count(len(answers), 'answer')} for "
                               f"{count(len(chunk), 'question')}")
        recs = []
        for item, ans in zip(chunk, answers, strict=True):
            if ans.error:
                errors[ans.error.split(":")[0][:60]] += 1
            recs.append(record_for(item, ans.text, ans.error, {"latency_s": ans.latency_s, "model": model.name}))
        claim()
        _append(path, recs)
        bar.update(len(chunk))
    bar.close()
    claim()
    records = read_records(path)
    ids = {it.id for it in benchmark.items}
    scored = _rescored(benchmark, records)
    summary = summarize(scored, n_boot=n_boot, seed=seed)
    summary["model"] = model.name
    summary["benchmark"] = benchmark.name
    write_summary(summary, out)
    atomic_write_json(out / "run.json", {
        "benchmark": {"name": benchmark.name, "source": getattr(benchmark, "source", ""), "items": len(ids),
                      "skipped": len(getattr(benchmark, "skipped", []))},
        "model": model.describe(), "use_image": use_image, "asked": len(todo), "resumed": resumed,
        "model_errors": dict(errors), "seconds": round(time.perf_counter() - start, 3),
    })
    return summary


def read_answers(path: str | os.PathLike[str]) -> tuple[dict[str, str | None], dict[str, Any]]:
    """An answers JSONL (``{"id": ..., "answer": ...}`` per line) -> answers by id, and the problems found."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the answers ({exc.strerror or exc})", path=str(path)) from None
    answers: dict[str, str | None] = {}
    bad: list[str] = []
    duplicates = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad.append(f"line {n}: not JSON")
            continue
        if not isinstance(rec, dict) or "id" not in rec:
            bad.append(f"line {n}: no 'id'")
            continue
        text = rec.get("answer", rec.get("text"))
        if text is not None and not isinstance(text, str):
            bad.append(f"line {n}: 'answer' is not a string")
            continue
        if str(rec["id"]) in answers:
            duplicates += 1
        answers[str(rec["id"])] = text
    if not answers and bad:
        raise DatasetError(f"{path}: no valid answer line ({bad[0]})", path=str(path))
    return answers, {"malformed_lines": bad, "duplicates": duplicates}


def selection_of(benchmark: Any) -> dict[str, Any] | None:
    """The ``--types`` / ``--kinds`` a scored benchmark was cut to (``None``: every question)."""
    subset = benchmark.info.get("subset") if isinstance(getattr(benchmark, "info", None), dict) else None
    if not subset:
        return None
    return {"types": subset.get("types"), "kinds": subset.get("kinds")}


def score_answers(benchmark: Any, answers_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  n_boot: int = 1000, seed: int = 0, name: str | None = None,
                  known_ids: Collection[str] | None = None) -> dict[str, Any]:
    """Score answers produced elsewhere. Questions without an answer count as unanswered (``missing``).

    ``known_ids``: when ``benchmark`` is a subset (``Benchmark.subset``), the ids of the whole benchmark:
    answers to its other questions are counted as ``outside_selection``, not as unknown ids.
    """
    answers, problems = read_answers(answers_path)
    items: Sequence[BenchmarkItem] = benchmark.items
    ids = {it.id for it in items}
    every = ids | set(known_ids or ())
    unknown = sorted(set(answers) - every)
    outside = len((set(answers) & every) - ids)
    records = []
    missing = 0
    for it in items:
        text = answers.get(it.id)
        if text is None:  # no line, or "answer": null
            missing += 1
        records.append(record_for(it, text))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _rewrite(out / RECORDS, records)
    summary = summarize(records, n_boot=n_boot, seed=seed)
    summary["model"] = name or Path(answers_path).stem
    summary["benchmark"] = benchmark.name
    summary["answers_file"] = {"path": str(answers_path), "answers": len(answers), "missing": missing,
                               "unknown_ids": len(unknown), "unknown_id_examples": unknown[:5],
                               "outside_selection": outside, "selection": selection_of(benchmark), **problems}
    write_summary(summary, out)
    return summary
