"""Parse accuracy on the golden answer set, per answer style (the figures in docs/evaluation.md).

A golden row is read as ``eval run`` / ``eval score`` read an answer: with its question, question
type and compared objects where the row has them. It is *right* when the status and the value match
(flags are not compared: they are this parser's vocabulary, and an older parser has fewer).

    python tests/eval/golden_report.py                          # the current parser
    git show HEAD:src/spatialforge/eval/answers.py > /tmp/answers_head.py
    python tests/eval/golden_report.py --baseline /tmp/answers_head.py   # and another version beside it

A baseline parser whose ``parse_answer`` takes no question is called without one.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).with_name("golden_answers.jsonl")
#: rows written before answer styles were recorded
ORIGINAL = "original"


def load_golden(path: Path = GOLDEN) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def parse_row(parse_answer: Callable[..., Any], row: dict[str, Any]) -> Any:
    """``parse_answer`` applied to a golden row, with the question where both the row and the parser have one."""
    args = (row["text"], row["kind"], row["unit"], tuple(row.get("options", ())))
    takes = inspect.signature(parse_answer).parameters
    kwargs = {}
    if "question" in takes:
        kwargs = {"question": row.get("question"), "qtype": row.get("qtype"),
                  "subjects": tuple(row.get("subjects", ()))}
    return parse_answer(*args, **kwargs)


def is_right(row: dict[str, Any], got: Any) -> bool:
    """Whether a parse gives the row's status and value (bools and option indices exactly, numbers to 1e-6)."""
    if got.status != row["status"]:
        return False
    want = row["value"]
    if want is None:
        return got.value is None
    if row["kind"] == "yes_no":
        return got.value is want
    if row["kind"] == "choice":
        return type(got.value) is int and got.value == want
    return (isinstance(got.value, int | float) and not isinstance(got.value, bool)
            and math.isclose(got.value, want, rel_tol=1e-6, abs_tol=1e-12))


def accuracy_by_style(rows: Iterable[dict[str, Any]], parse_answer: Callable[..., Any]) -> dict[str, tuple[int, int]]:
    """style -> (rows, rows parsed right), styles in first-seen order (rows without a style: ``original``)."""
    out: dict[str, list[int]] = {}
    for row in rows:
        counts = out.setdefault(row.get("style", ORIGINAL), [0, 0])
        counts[0] += 1
        counts[1] += is_right(row, parse_row(parse_answer, row))
    return {k: (n, ok) for k, (n, ok) in out.items()}


def _load_parser(path: Path) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location("_golden_baseline_answers", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.parse_answer


def _pct(n: int, ok: int) -> str:
    return f"{ok}/{n} ({100 * ok / n:.1f} %)" if n else "-"


def report(rows: list[dict[str, Any]], current: Callable[..., Any], baseline: Callable[..., Any] | None) -> str:
    """A Markdown table: per style, the rows and the share parsed right (baseline, then current)."""
    now = accuracy_by_style(rows, current)
    before = accuracy_by_style(rows, baseline) if baseline is not None else None
    head = "| answer style | cases | " + ("baseline | " if before else "") + "current |"
    lines = [head, "|---|---|" + ("---|" if before else "") + "---|"]
    total = [0, 0, 0]
    for style, (n, ok) in now.items():
        cells = [style, str(n)] + ([_pct(*before[style])] if before else []) + [_pct(n, ok)]
        lines.append("| " + " | ".join(cells) + " |")
        total[0] += n
        total[1] += before[style][1] if before else 0
        total[2] += ok
    cells = ["all", str(total[0])] + ([_pct(total[0], total[1])] if before else []) + [_pct(total[0], total[2])]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another answers.py to compare with (default: none)")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="the golden set")
    args = parser.parse_args(argv)
    from spatialforge.eval.answers import parse_answer

    print(report(load_golden(args.golden), parse_answer, _load_parser(args.baseline) if args.baseline else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
