"""A SpatialRGPT-Bench file built from the benchmark's own answer templates (every category, every template).

SpatialRGPT-Bench's answers are templated (see docs/benchmarks.md, "Released schema"): predicates open
with Yes / Indeed / Correct / That is True or No / In fact / Actually / Incorrect / That is False, and
the negative "In fact" / "Actually" answers state the converse relation instead of saying no; choices
name the region in several word orders; lengths are ``<number> <unit>``. The phrasings below follow the
benchmark's generator (``dataset_pipeline/osdsynth/processor/prompt_template.py``), written out here as
test data. :func:`write_template_bench` writes one record per (category, template, region order).
"""

from __future__ import annotations

import json
from pathlib import Path

from .bench_fixtures import _record, write_spatialrgpt_images

# category -> (questions, true answers, false answers); {A} / {B} are the regions
PREDICATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "left_predicate": (
        ("Is {A} to the left of {B} from the viewer's perspective?", "Does {A} appear on the left side of {B}?",
         "Can you confirm if {A} is positioned to the left of {B}?"),
        ("Yes, {A} is to the left of {B}.", "Indeed, {A} is positioned on the left side of {B}.",
         "Correct, you'll find {A} to the left of {B}."),
        ("No, {A} is not to the left of {B}.", "In fact, {A} is to the right of {B}.",
         "Incorrect, {A} is not on the left side of {B}."),
    ),
    "right_predicate": (
        ("Is {A} to the right of {B} from the viewer's perspective?", "Does {A} appear on the right side of {B}?",
         "Can you confirm if {A} is positioned to the right of {B}?"),
        ("Yes, {A} is to the right of {B}.", "Indeed, {A} is positioned on the right side of {B}.",
         "Correct, you'll find {A} to the right of {B}."),
        ("No, {A} is not to the right of {B}.", "In fact, {A} is to the left of {B}.",
         "Incorrect, {A} is not on the right side of {B}."),
    ),
    "above_predicate": (
        ("Is {A} above {B}?", "Does {A} appear over {B}?", "Can you confirm if {A} is positioned above {B}?"),
        ("Yes, {A} is above {B}.", "Indeed, {A} is positioned over {B}.", "Correct, {A} is located above {B}."),
        ("No, {A} is not above {B}.", "Actually, {A} is below {B}.", "Incorrect, {A} is not positioned above {B}."),
    ),
    "below_predicate": (
        ("Is {A} below {B}?", "Does {A} appear under {B}?", "Can you confirm if {A} is positioned below {B}?"),
        ("Yes, {A} is below {B}.", "Indeed, {A} is positioned under {B}.", "Correct, {A} is located below {B}."),
        ("No, {A} is not below {B}.", "Actually, {A} is above {B}.", "Incorrect, {A} is not positioned below {B}."),
    ),
    "wide_predicate": (
        ("Is {A} wider than {B}?", "Does {A} have a greater width compared to {B}?",
         "Can you confirm if {A} is wider than {B}?"),
        ("Yes, {A} is wider than {B}.", "Indeed, {A} has a greater width compared to {B}.",
         "Correct, the width of {A} exceeds that of {B}."),
        ("No, {A} is not wider than {B}.", "In fact, {A} might be narrower than {B}.",
         "Incorrect, {A}'s width does not surpass {B}'s."),
    ),
    "big_predicate": (
        ("Is {A} bigger than {B}?", "Does {A} have a larger size compared to {B}?",
         "Can you confirm if {A} is bigger than {B}?"),
        ("Yes, {A} is bigger than {B}.", "Indeed, {A} has a larger size compared to {B}.",
         "Correct, {A} is larger in size than {B}."),
        ("No, {A} is not bigger than {B}.", "Actually, {A} might be smaller than {B}.",
         "Incorrect, {A} is not larger than {B}."),
    ),
    "tall_predicate": (
        ("Is {A} taller than {B}?", "Does {A} have a greater height compared to {B}?",
         "Can you confirm if {A} is taller than {B}?"),
        ("Yes, {A} is taller than {B}.", "Indeed, {A} has a greater height compared to {B}.",
         "Correct, {A} is much taller as {B}."),
        ("No, {A} is not taller than {B}.", "In fact, {A} may be shorter than {B}.",
         "Incorrect, {A}'s height is not larger of {B}'s."),
    ),
    "short_predicate": (
        ("Is {A} shorter than {B}?", "Does {A} have a lesser height compared to {B}?",
         "Can you confirm if {A} is shorter than {B}?"),
        ("Yes, {A} is shorter than {B}.", "Indeed, {A} has a lesser height compared to {B}.",
         "Correct, {A} is not as tall as {B}."),
        ("No, {A} is not shorter than {B}.", "In fact, {A} may be taller than {B}.",
         "Incorrect, {A}'s height does not fall short of {B}'s."),
    ),
    "thin_predicate": (
        ("Is {A} thinner than {B}?", "Does {A} have a lesser width compared to {B}?",
         "Can you confirm if {A} is thinner than {B}?"),
        ("Yes, {A} is thinner than {B}.", "Indeed, {A} has a lesser width compared to {B}.",
         "Correct, {A}'s width is less than {B}'s."),
        ("No, {A} is not thinner than {B}.", "In fact, {A} might be wider than {B}.",
         "Incorrect, {A}'s width is not less than {B}'s."),
    ),
    "small_predicate": (
        ("Is {A} smaller than {B}?", "Does {A} have a smaller size compared to {B}?",
         "Can you confirm if {A} is smaller than {B}?"),
        ("Yes, {A} is smaller than {B}.", "Indeed, {A} has a smaller size compared to {B}.",
         "Correct, {A} occupies less space than {B}."),
        ("No, {A} is not smaller than {B}.", "Actually, {A} might be larger than {B}.",
         "Incorrect, {A} is not smaller in size than {B}."),
    ),
    "behind_predicate": (
        ("Is {A} behind {B}?", "Is the position of {A} more distant than that of {B}?", "Does {A} lie behind {B}?",
         "Is {A} positioned behind {B}?", "Is {A} further to camera compared to {B}?", "Does {A} come behind {B}?",
         "Is {A} positioned at the back of {B}?", "Is {A} further to the viewer compared to {B}?"),
        ("Yes.", "Yes, it is.", "Yes, it is behind {B}.", "That is True.", "Yes, {A} is further from the viewer.",
         "Yes, {A} is behind {B}."),
        ("No.", "No, it is not.", "No, it is in front of {B}.", "That is False.", "No, {A} is closer to the viewer.",
         "No, {B} is in front of {A}."),
    ),
    "front_predicate": (
        ("Is {A} in front of {B}?", "Is the position of {A} less distant than that of {B}?",
         "Does {A} lie in front of {B}?", "Is {A} positioned in front of {B}?",
         "Is {A} closer to camera compared to {B}?", "Does {A} come in front of {B}?", "Is {A} positioned before {B}?",
         "Is {A} closer to the viewer compared to {B}?"),
        ("Yes.", "Yes, it is.", "Yes, it is in front of {B}.", "That is True.", "Yes, {A} is closer to the viewer.",
         "Yes, {A} is in front of {B}."),
        ("No.", "No, it is not.", "No, it is behind {B}.", "That is False.", "No, {A} is further to the viewer.",
         "No, {A} is behind {B}."),
    ),
}

# category -> (questions, answers); {X} is the chosen region
CHOICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left_choice": (
        ("Which is more to the left, {A} or {B}?",
         "Between {A} and {B}, which one appears on the left side from the viewer's perspective?",
         "Who is positioned more to the left, {A} or {B}?"),
        ("{X} is more to the left.", "From the viewer's perspective, {X} appears more on the left side.",
         "Positioned to the left is {X}."),
    ),
    "right_choice": (
        ("Which is more to the right, {A} or {B}?",
         "Between {A} and {B}, which one appears on the right side from the viewer's perspective?",
         "Who is positioned more to the right, {A} or {B}?"),
        ("{X} is more to the right.", "From the viewer's perspective, {X} appears more on the right side.",
         "Positioned to the right is {X}."),
    ),
    "above_choice": (
        ("Which is above, {A} or {B}?", "Between {A} and {B}, which one is positioned higher?",
         "Who is higher up, {A} or {B}?"),
        ("{X} is above.", "Positioned higher is {X}.", "{X} is higher up."),
    ),
    "below_choice": (
        ("Which is below, {A} or {B}?", "Between {A} and {B}, which one is positioned lower?",
         "Who is lower down, {A} or {B}?"),
        ("{X} is below.", "Positioned lower is {X}.", "{X} is lower down."),
    ),
    "front_choice": (
        ("Which is in front, {A} or {B}?", "Between {A} and {B}, which one is positioned in front?",
         "Who is more forward, {A} or {B}?"),
        ("{X} is in front.", "Positioned in front is {X}.", "{X} is more forward."),
    ),
    "behind_choice": (
        ("Which is behind, {A} or {B}?", "Between {A} and {B}, which one is positioned behind?",
         "Who is more backward, {A} or {B}?"),
        ("{X} is behind.", "Positioned behind is {X}.", "{X} is more backward."),
    ),
    "tall_choice": (
        ("Who is taller, {A} or {B}?", "Between {A} and {B}, which one has more height?",
         "Which of these two, {A} or {B}, stands taller?"),
        ("{X} is taller.", "With more height is {X}.", "Standing taller between the two is {X}."),
    ),
    "short_choice": (
        ("Who is shorter, {A} or {B}?", "Between {A} and {B}, which one has less height?",
         "Which of these two, {A} or {B}, stands shorter?"),
        ("{X} is shorter.", "With less height is {X}.", "Standing shorter between the two is {X}."),
    ),
}

# category -> (questions, answers); {X} is a length; single-region categories use {A} only
QUANTITATIVE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "distance_data": (
        ("What is the distance between {A} and {B}?", "How far apart are {A} and {B}?", "How far is {A} from {B}?"),
        ("{X}", "{A} and {B} are {X} apart.", "{A} is {X} away from {B}.", "A distance of {X} exists between {A} "
         "and {B}.", "{A} is {X} from {B}.", "{A} and {B} are {X} apart from each other.", "They are {X} apart.",
         "The distance of {A} from {B} is {X}."),
    ),
    "vertical_distance_data": (
        ("What is the vertical distance between {A} and {B}?", "How far apart are {A} and {B} vertically?"),
        ("{X}", "{A} and {B} are {X} apart vertically.", "{A} is {X} away from {B} vertically.",
         "A vertical distance of {X} exists between {A} and {B}.", "Vertically, They are {X} apart.",
         "The vertical distance of {A} from {B} is {X}.", "It is approximately {X}."),
    ),
    "horizontal_distance_data": (
        ("What is the horizontal distance between {A} and {B}?", "How far apart are {A} and {B} horizontally?"),
        ("{X}", "{A} and {B} are {X} apart horizontally.", "{A} is {X} from {B} horizontally.",
         "Horizontally, They are {X} apart.", "The horizontal distance of {A} from {B} is {X}.",
         "It is approximately {X}."),
    ),
    "width_data": (
        ("Measure the width of {A}.", "How wide is {A}?", "What is the radius of {A}?"),
        ("{X}", "The width of {A} is {X}.", "{A} is {X} wide.", "{A} is {X} in width.", "It is {X}."),
    ),
    "height_data": (
        ("Measure the height of {A}.", "Determine the vertical dimensions of {A}.", "How tall is {A}?"),
        ("{X}", "The height of {A} is {X}.", "{A} is {X} tall.", "{A} is {X} in height.", "It is {X}."),
    ),
}
# lengths as the benchmark writes them (two decimals in meters, centimeters, feet or inches)
LENGTHS = ("1.52 meters", "45.72 centimeters", "30.05 inches", "6.23 feet", "0.87 meters", "3.4 feet")
DIRECTIONS = ("{B} is roughly at {X} o'clock from {A}.", "{A} will find {B} around the {X} o'clock direction.")

SINGLE_REGION = ("width_data", "height_data")
ORDERS = (("Region [0]", "Region [1]"), ("Region [1]", "Region [0]"))


def template_records() -> list[dict]:
    """One SpatialRGPT-Bench record per template (both region orders, both answers of every choice)."""
    out: list[dict] = []

    def add(kind: str, category: str, question: str, answer: str, n_regions: int = 2) -> None:
        out.append(_record(f"{kind}_{category}_{len(out):04d}", kind, category, question, answer,
                           image=1 + len(out) % 2, n_regions=n_regions))

    for category, (questions, yes, no) in PREDICATES.items():
        for n, answer in enumerate((*yes, *no)):
            for a, b in ORDERS:
                q = questions[n % len(questions)]
                add("qualitative", category, q.format(A=a, B=b), answer.format(A=a, B=b))
    for category, (questions, answers) in CHOICES.items():
        for answer in answers:
            for q in questions:
                for a, b in ORDERS:
                    for x in (a, b):
                        add("qualitative", category, q.format(A=a, B=b), answer.format(X=x))
    for category, (questions, answers) in QUANTITATIVE.items():
        single = category in SINGLE_REGION
        for n, answer in enumerate(answers):
            for k, length in enumerate(LENGTHS):
                a, b = ORDERS[0] if single else ORDERS[k % 2]
                q = questions[(n + k) % len(questions)]
                add("quantitative", category, q.format(A=a, B=b), answer.format(A=a, B=b, X=length),
                    n_regions=1 if single else 2)
    for n, answer in enumerate(DIRECTIONS):
        for hour in range(1, 13):
            a, b = ORDERS[(n + hour) % 2]
            add("quantitative", "direction", f"If you are at {a}, where will you find {b}?",
                answer.format(A=a, B=b, X=hour))
    return out


def write_template_bench(root: Path) -> Path:
    """``root/SpatialRGPT-Bench_v1.json`` with :func:`template_records` and the two images it uses."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps(template_records(), indent=1), encoding="utf-8")
    write_spatialrgpt_images(root)
    return path
