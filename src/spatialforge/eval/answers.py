"""Answer understanding: what a free-text model reply states (torch-free; stdlib only).

Three readers, each returning a :class:`~spatialforge.eval.types.ParsedAnswer`, and a dispatcher:

* :func:`parse_quantity` — a length (``unit="m"``, or any unit of :data:`LENGTH_UNITS`: the value is
  given in that unit), a ratio (``"ratio"``) or a clock hour (``"clock"``);
* :func:`parse_yes_no` — a bool;
* :func:`parse_choice` — the index of the option the reply names;
* :func:`parse_point` — an image point (pixel) and / or a 3D point (metres);
* :func:`parse_answer` — dispatch on a question's ``kind`` / ``unit``; optionally with the question's
  text, type (``"left_predicate"``, ``"close_choice"`` ...) and compared objects (:func:`item_subjects`),
  which let a reply that states a relation instead of yes / no or an option name be read.

Text is normalised first: Unicode NFKC (full-width digits, ``㎝``), typographic quotes and primes
(``2′6″``), dashes, vulgar fractions (``1½``), Markdown emphasis / code, LaTeX ``\\text{}`` and
simple HTML tags are reduced to plain ASCII-like text; matching ignores case.

Rules for the ambiguous cases (all tested in ``tests/eval/test_answers.py`` and its golden set):

Quantities
    * A *mention* is a number (digits with ``,`` / space thousands or a decimal comma, fractions,
      words: "one and a half", "a dozen", "half a", "a couple of") with a unit ("1.5m", "3 ft 2 in",
      ``2'6"``, "a metre and a half"), a range ("between 2 and 3 m", "2-3 m", "2 to 3 metres",
      "2 or 3 metres", "3~4 m": status ``range``, value = midpoint, flag ``range``) or, for a length, a bare
      number ("about 2": metres, flag ``unit_assumed``). A bare number only counts when it ends a
      clause ("the answer is 2.") or follows a hedge / bound ("about 2 from"), so "the 2 chairs" and
      "3D" never do; numbers with other units (degrees, %, m², m/s, pixels) never do.
    * Several different mentions: the reply's *answer* is the first mention after the last
      concluding marker that is followed by a mention in the same clause ("so", "therefore",
      "thus", "hence", "the answer is", "answer:", "in total", "=" ...; chain-of-thought replies
      end this way); without one, the first mention (direct replies state the answer first and
      elaborate after: "The chair is 0.8 m from the table, which is 2 m wide" -> 0.8 m).
      Flag ``multiple`` (and ``conclusion`` when a marker decided). Lengths stated of a reference
      object are not the answer when another length is stated: a clause that opens with (or a part that
      starts at) "given", "using", "assuming", "since", "because", "considering", "knowing", "based on",
      "compared to", "relative to", "if", or that says "typical(ly)", "standard", "usually", "on
      average", "as a reference", "for scale" (flag ``reference``): "Using the standard height of a
      door (about 2 meters) as a reference, the window appears to be about 1.2 meters wide" -> 1.2 m.
      With the question known and no concluding marker, the length attached to the question's subject
      wins: its noun before the length (+2), the asked dimension ("wide", "tall", "apart" ...) around it
      (+1), "appears / looks / measures" before it (+1), another dimension right next to it (-2); the
      first best (flag ``subject``): "The door is 2 m tall and the window is 1.2 m wide" to "How wide is
      the window?" -> 1.2 m. A mention in parentheses right
      after another ("1.5 m (5 ft)") or joined by "or" / "/" / "i.e." with a value within 20 % is
      the same answer in other units and is dropped. Units with a number count before bare numbers.
    * Hedges ("about", "roughly", "~", "≈", "a bit over", "just under", "or so") -> flag ``approx``;
      bounds ("less than 1 metre", "under", "over", "at least", "up to", "<", "or more") -> the
      bound itself as the value, flag ``bound``; a sign ("-0.3 m", "minus") is kept, flag ``negative``.
    * Ratios: "1.5 times", "1.5x", "twice" (2), "thrice", "double", "half as tall" (0.5),
      "50% taller" (1.5), "20% shorter" (0.8), "3:2" (1.5), "N times shorter/smaller" (1/N, flag
      ``inverse``), "the same height" (1, flag ``implicit``); lengths are ignored.
    * Q-Spatial Bench's format ``\\scalar{VALUE} \\distance_unit{UNIT}`` (spaced, braces padded,
      backslashes doubled or missing, ``\\distance\\_unit``, the unit in words or abbreviated, or
      written after the box): the last well-formed box is the answer whenever present, read as "VALUE
      UNIT" (so ``\\scalar{1.5-2}`` is a range, ``\\scalar{two}`` is 2; flag ``boxed``), whatever
      lengths the reasoning before it states. A box with no readable number is ignored.
    * Clock: "3 o'clock", "3 o' clock", "three o'clock", "3:00" (hour ``int``); a convention such as
      "with 12 o'clock pointing away from the camera" is not the answer. A range of hours ("between
      2 and 3 o'clock") gives the circular midpoint as a float (status ``range``).

Yes / no
    A leading word or phrase at the start of a sentence (after fillers such as "Well,", "Actually,",
    "Based on the image,", "The answer is") decides: yes / yeah / yep / correct / indeed / absolutely
    / that's right / true / sure / I think so, or no / nope / incorrect / not at all / not really /
    absolutely not / that's wrong / I don't think so; also "the answer is yes" and "so, no" anywhere.
    Both polarities stated ("Yes. No, wait", "yes and no") -> ``ambiguous``. Without such a word: a
    negated first sentence ("It is not on the left.", "It isn't.") -> ``False`` with flag
    ``implicit``; a bare confirmation ("It is.", "They are indeed.") -> ``True`` with flag
    ``implicit``; "It isn't.", "It does not appear so." -> ``False`` with flag ``implicit``. A yes /
    no closing a clause after a comma ("After examining the positions, no.") or after "I think",
    "probably", "likely" ("Not sure, but I think no." -> ``False``, flag ``hedged``) counts as a
    leading word. Without such a word and with the question known, the relation the reply states
    decides (see Relations): "In fact, A is to the right of B." to "Is A to the left of B?" -> ``False``
    (flags ``relation``, ``implicit``); relations that contradict each other -> ``ambiguous``. A
    leading yes / no always wins over a stated relation. Without the question, a negated first sentence
    that names a relation ("It is not on the left.", "The mug is not to the left of the plate.") ->
    ``False`` (flag ``implicit``). Anything else is unanswered, never "No": refusal phrases (see
    Refusals) -> ``refusal``, other statements ("The mug is to the right of the plate" with no question,
    "The mug is in front of the plate" to a left / right question) -> ``no_answer``.

Choice
    An option is *named* by its full words (articles and plural -s ignored, "leftmost" ~ "on the
    left" ~ "left"), else by its core before a preposition if unique ("the blue mug" for "the blue
    mug on the left"), else by a distinctive word (a word of only one option; colours and nouns
    before spatial words).
    Mentions inside a restated question ("Which is closer, A or B? B.") are ignored when the rest
    names an option. Exactly one option named -> it. Several named -> ``ambiguous`` if the reply
    says "both", "either", "neither", "equally" or "the same"; otherwise the first *subject* mention
    after the last concluding marker ("The table is farther, so the chair is closer" -> the chair),
    else the first subject mention, else the first mention. Flag ``both_named``. Mentions inside a
    concessive clause ("Although the chair looks bigger, ...", "while X ...", "whereas X ...") are
    dropped when others remain. "Both" / "same" make the reply ambiguous unless a contrast follows that
    names one option ("The chair and table are both in view, but the chair is closer." -> the chair).
    A mention right
    after a preposition, "than", "as", "not", "comparing" (or coordinated with such a mention:
    "between the table and the chair, ...") is an object, not a subject ("Compared with the table,
    the chair is closer" -> the chair; "It's not the chair, it's the table" -> the table). A subject
    whose verb is negated yields to a later un-negated subject ("The table is not closer; the chair
    is." -> the chair, flag ``negated_subject``). So "The chair is taller than the table" -> the
    chair and "The table is shorter than the chair" -> the table: the question's polarity is not
    known, the subject of the first clause is taken as the answer. With the question (or its type)
    known, a reply stating a relation on the asked axis is read by it first (see Relations): "The lamp
    is shorter than the bookshelf." to "Which is taller?" -> the bookshelf, "The table is farther from
    the camera than the chair." to "Which is closer?" -> the chair, also when only one option is named
    (flag ``by_elimination``). With two options, naming
    only one, after "not", picks the other (flag ``by_elimination``). Option letters: a reply that
    names no option but opens with a letter ("B", "(b)", "[A]", "A.", "Option B", "The answer is (B)")
    or holds a bracketed or uppercase one ("[A]", "(B)", "answer: C") picks by letter (flag
    ``letter``); a lowercase "a" inside a sentence is the article. "The first one", "the second
    region", "the former / latter" pick by position (flag ``ordinal``). No option named ->
    ``ambiguous`` if the reply uses a spatial reference that no option contains ("the leftmost
    one" for "the chair" / "the table"), else ``no_answer``.

Relations
    Axes and directions: left / right; above, higher, over / below, lower, under; in front, closer,
    nearer, less distant / behind, farther, further back, deeper, more distant (closer to the camera or
    to an object alike; "further left" is an intensifier); taller, greater height / shorter, less tall;
    wider, broader, more across / narrower, thinner; bigger, larger, more space / smaller. A
    comparative right after a dimension noun takes its axis ("A's height is not larger than B's"). The
    asked relation is the question type's ("left_predicate", "far_choice", SpatialRGPT's categories
    too) or else the question's first relation outside the option names; a yes / no question's
    subject is the object named before the relation, its object the one after it (or ``subjects``
    located in the question). In the reply (option and object names masked), each relation on the
    asked axis has a subject: the nearest object named before it in its clause that is not after a
    preposition, "than" or "not"; else one named after "is" ("Positioned to the left is Region [1]");
    else ("it", or no subject) the last subject earlier in the sentence ("The box isn't higher than the
    mug; it's lower."); else, for yes / no, the question's subject. Relation words used as a name's
    adjective ("the farther grey table") are not relations, nor is "closer to the wall" when the
    question asks about the camera. Its polarity: "not", "n't", "never", "no" before it in its clause,
    unless it negates a name ("the table and not the chair is closer"); "not as tall as" = shorter, an
    unnegated "as tall as" states no direction. A yes / no reply agrees when the stated direction,
    flipped by a negation, and flipped again when the subject is the question's second object,
    equals the asked one. A choice reply picks the subject when it agrees, else the other of two
    options (or the named object it is compared with). Several relations must agree, or those after
    the last concluding marker decide; else a choice falls back to the rules above.

Points
    An image point is read from "(412, 230)", "[412, 230]", "pixel (412, 230)", "(412 px, 230 px)",
    "x=412, y=230" / "x: 412 and y: 230" / "u=412, v=230", "at pixel 412, 230", Qwen2.5-VL's JSON
    ``{"point_2d": [412, 230]}`` (in a list or a code fence too; ``"bbox_2d": [x1, y1, x2, y2]`` gives
    the box centre, flag ``box``), and Molmo's ``<point x="61.5" y="40.4" alt="...">`` or ``<points
    x1=".." y1=".." x2=..>`` (percent of the image width / height, flag ``percent``). A pair of numbers
    both between 0 and 1, one with a decimal point ("(0.64, 0.48)"), is a fraction of the image
    width / height (flag ``normalized``). Percent and fractions need the image size (``image_size``);
    without it they are not read (flag ``no_image_size``). Pixels are (column, row) from the top-left
    corner. A 3D point is a triple: "(0.42, 1.10, 0.75) m", "(42, 110, 75) cm", "(420 mm, 1100 mm,
    750 mm)", "x=0.42 m, y=1.10 m, z=0.75 m", ``"point_3d": [0.42, 1.1, 0.75]`` (metres), in any length
    unit of :data:`LENGTH_UNITS` (a triple without a unit is in metres, flag ``unit_assumed``); a pair
    with a length unit ("(0.4, 1.1) m") is neither. The value is ``{"pixel": [u, v] or None,
    "point_3d": [x, y, z] or None}``; a reply may give either or both. The same point stated twice
    (within 1 pixel / 1 mm, e.g. "(412, 230), i.e. x=412, y=230") counts once; two different pixels or
    two different 3D points -> ``ambiguous`` (flag ``multiple``). Refusals as below; a point stated
    despite a refusal phrase follows the same rule as a value (flag ``hedged``).

Refusals
    "I cannot determine", "impossible to tell", "I don't know", "I'm not sure", "sorry", "hard to
    say", "not enough information", "there isn't enough information", "the image does not show ...",
    "not (clearly) visible", "not in the image", "cannot be answered / judged / compared", "too blurry
    / dark", "partially occluded", "no way to know", "would need a different view", "without depth
    information", "depends on", "no idea" ... -> ``refusal``, unless the reply still commits to a value:
    one in another sentence, before the refusal in its sentence ("About 2 m, though I can't be
    sure"), or after a contrast ("..., but it looks like 2 m"): then the value with flag ``hedged``.
    A leading "No" in the refusal's sentence ("No, I can't tell") is a refusal, as is a choice
    reply naming several options in the refusal's sentence ("I can't tell whether A or B"); such
    refusals carry the flag ``value_in_refusal``.

Flags
    ``approx``, ``bound``, ``negative``, ``range``, ``unit_assumed``, ``inverse`` (what a number
    says); ``multiple``, ``conclusion``, ``reference``, ``subject``, ``boxed``, ``relation``,
    ``both_named``, ``negated_subject``, ``by_elimination``, ``letter``, ``ordinal`` (how it was
    chosen); ``implicit`` (no explicit yes / no / number); ``hedged`` (a value
    despite a refusal phrase); ``both`` (yes and no); ``unresolved_reference``; ``value_in_refusal``;
    for points ``json``, ``box``, ``percent``, ``normalized``, ``no_image_size``.
"""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from spatialforge.eval.types import ParsedAnswer
from spatialforge.qa.refer import singular

__all__ = [
    "LENGTH_UNITS",
    "UNIT_ALIASES",
    "item_subjects",
    "normalize_text",
    "parse_answer",
    "parse_choice",
    "parse_point",
    "parse_quantity",
    "parse_yes_no",
    "strip_reasoning",
    "to_metres",
    "unit_of",
]

# ----------------------------------------------------------------------------------------------- units

#: metres per unit, by canonical unit name
LENGTH_UNITS: Mapping[str, float] = MappingProxyType({
    "mm": 0.001, "cm": 0.01, "dm": 0.1, "m": 1.0, "km": 1000.0,
    "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344,
})


def _aliases() -> dict[str, str]:
    table = {'"': "in", "'": "ft", "″": "in", "′": "ft"}
    spelled = {
        "mm": ("millimeter", "millimetre", "mm"), "cm": ("centimeter", "centimetre", "cm"),
        "dm": ("decimeter", "decimetre", "dm"), "m": ("meter", "metre", "m", "mtr", "mt"),
        "km": ("kilometer", "kilometre", "km"), "in": ("inch", "in"), "ft": ("foot", "ft"),
        "yd": ("yard", "yd"), "mi": ("mile", "mi"),
    }
    for unit, names in spelled.items():
        for name in names:
            table[name] = unit
            if len(name) > 2 and name not in ("inch", "foot"):
                table[name + "s"] = unit
    table.update({"inches": "in", "feet": "ft", "cms": "cm", "kms": "km", "mms": "mm", "yds": "yd",
                  "mtrs": "m", "mts": "m"})
    return table


#: unit spelling (lower case, no trailing dot) -> canonical unit of :data:`LENGTH_UNITS`
UNIT_ALIASES: Mapping[str, str] = MappingProxyType(_aliases())
_FULL_UNIT_WORDS = frozenset(w for w in UNIT_ALIASES if len(w) > 3 and w not in ("mtrs",))


def unit_of(unit_word: str) -> str:
    """The canonical unit (``"m"``, ``"ft"``, ...) of a spelling: ``"Metres"``, ``"ft."``, ``"″"``."""
    key = unicodedata.normalize("NFKC", str(unit_word).translate(_CHAR_MAP)).strip().lower()
    key = key.rstrip(".") if len(key) > 1 else key
    key = key.replace(".", "") if key not in UNIT_ALIASES else key
    if key not in UNIT_ALIASES:
        raise ValueError(f"unknown length unit {unit_word!r}")
    return UNIT_ALIASES[key]


def to_metres(value: float, unit_word: str) -> float:
    """``value`` ``unit_word`` in metres: ``to_metres(3, "feet")`` -> 0.9144 (``ValueError`` if unknown)."""
    return float(value) * LENGTH_UNITS[unit_of(unit_word)]


# ----------------------------------------------------------------------------------------------- text

_CHAR_MAP = str.maketrans({
    "′": "'", "’": "'", "‘": "'", "´": "'", "ʹ": "'", "″": '"', "“": '"', "”": '"', "„": '"', "ʺ": '"',
    "−": "-", "–": "-", "‐": "-", "‑": "-", "‒": "-", "—": ";", "―": ";", "×": " x ", "≃": "≈",
    "½": " 1/2", "¼": " 1/4", "¾": " 3/4", "⅓": " 1/3", "⅔": " 2/3", "⅛": " 1/8", "⁄": "/",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2007": " ", "\u200b": "", "\ufeff": "",
})
_LATEX_CMD = re.compile(r"\\(?:text|mathrm|mathbf|textbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_SYM = (("\\approx", " ≈ "), ("\\sim", " ~ "), ("\\times", " x "), ("\\pm", " ± "),
              ("\\,", " "), ("\\;", " "), ("\\!", ""), ("\\ ", " "), ("\\%", "%"))
_HTML_TAG = re.compile(r"</?[A-Za-z_][A-Za-z0-9_-]*\s*/?>")


def normalize_text(text: str) -> str:
    """Plain text of a reply (case kept): NFKC, ASCII quotes / dashes, no Markdown, LaTeX or tags."""
    t = str(text).translate(_CHAR_MAP)
    t = unicodedata.normalize("NFKC", t).translate(_CHAR_MAP)
    for src, dst in _LATEX_SYM:
        t = t.replace(src, dst)
    t = _LATEX_CMD.sub(r"\1", t).replace("$", "")
    t = _HTML_TAG.sub(" ", t)
    t = t.replace("**", "").replace("__", "").replace("*", "").replace("`", "")
    t = re.sub(r"(?m)^\s*#+\s*", "", t)
    t = t.replace("''", '"').replace("+/-", "±").replace("+-", "±")
    t = re.sub(r"[ \t\r\f\v]+", " ", t)
    return re.sub(r" *\n[\s]*", "\n", t).strip()


def _lower(text: str) -> str:
    """Lower case with the same length (so offsets match the original)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[^a-z0-9\s])|\n+")


def _sentence_starts(clean: str) -> list[int]:
    return [0] + [m.end() for m in _SENTENCE_END.finditer(clean)]


def _sentence_of(starts: list[int], pos: int) -> int:
    return sum(1 for s in starts[1:] if s <= pos)


_REFUSAL = re.compile(
    r"\b(?:i\s+)?(?:can ?not|can't|am unable to|'m unable to|unable to|am not able to|'m not able to|not able to|"
    r"couldn't|could not|don't have enough|do not have enough)\s+(?:be\s+)?(?:accurately\s+|precisely\s+|"
    r"reliably\s+|exactly\s+|really\s+|definitively\s+|confidently\s+|clearly\s+)?(?:determine|determined|tell|"
    r"told|say|know|answer|judge|judged|estimate|estimated|measure|measured|infer|inferred|assess|assessed|"
    r"provide|give|calculate|calculated|verify|verified|see|identify|confirm|confirmed|be sure|be certain|"
    r"make out|compute|gauge|discern|decide|information)\b"
    r"|\b(?:impossible|not possible) to\b|\bno way to (?:tell|know|determine|say)\b"
    r"|\bi (?:do not|don't) know\b|\b(?:i'm|i am) not (?:sure|certain)\b|\bnot sure\b|\bunsure\b"
    r"|\bsorry\b|\bapologi[sz]e\b|\bas an ai\b|\bcannot be (?:determined|known|measured|estimated|inferred)\b"
    r"|\b(?:hard|difficult|tricky) to (?:tell|say|determine|judge|estimate|know|see)\b"
    r"|\b(?:insufficient|not enough) (?:information|info|detail|details|context|data|visual)\b"
    r"|\bunclear\b|\bnot clear\b|\bnot (?:visible|shown) in\b|\bn/a\b|\bno answer\b|\bunanswerable\b"
    # paraphrases: what the image does not show, what is missing, what would be needed
    r"|n't enough\b|\bnot (?:sufficient|enough)\b|\bno idea\b|\bno (?:clear )?indication\b"
    r"|\b(?:does|do|did)(?: not|n't) (?:clearly |fully |really |actually )?(?:show|provide|give|contain|include|"
    r"reveal|allow|offer|depict|let me)\b"
    r"|(?:\bnot|n't|\bnever) (?:clearly |fully |entirely |directly |easily |readily )?(?:visible|shown|"
    r"discernible|distinguishable|identifiable|apparent|evident|depicted|in view|"
    r"in (?:the|this) (?:image|picture|photo|frame|scene))\b"
    r"|\bcan(?:not|'t| not) (?:be )?(?:clearly |reliably |accurately )?(?:seen|answered|judged|compared|resolved|"
    r"established|ascertained|discerned|made out)\b"
    r"|\btoo (?:blurry|blurred|dark|small|grainy|pixelated|ambiguous|unclear|far away|occluded|obscured|cropped|low)\b"
    r"|\b(?:fully|completely|partially|partly|largely|heavily|mostly) (?:occluded|obscured|hidden|cut off)\b"
    r"|\bout of (?:the )?frame\b|\bno (?:way|means) (?:for (?:me|us) )?to\b"
    r"|\b(?:would|will) need (?:more|a|an|additional|another|better|further)\b"
    r"|\bneed (?:more|additional|further) (?:information|context|details?|views?)\b"
    r"|\b(?:don't|do not) have (?:access|enough|sufficient)\b"
    r"|\b(?:without|lacking|lack of|lacks|no) (?:any |enough |sufficient |clear |reliable )?(?:depth (?:information|"
    r"cues?|data)|scale|reference|context|visual cues?)\b"
    r"|\bdepends on\b|\bambiguous\b|\bindeterminate\b|\binconclusive\b"
)
_CONTRAST = re.compile(
    r"\b(?:but|however|though|although|that said|nevertheless|nonetheless|still|if i had to|best guess|"
    r"best estimate|my guess|i(?:'d| would) (?:guess|estimate|say)|i (?:guess|estimate)|it (?:appears|seems|looks)|"
    r"appears to|seems to|looks like|likely|probably|maybe|perhaps|roughly|approximately|an estimate)\b"
)
_CONCLUSION = re.compile(
    r"(?<!\bor )(?<!\bnot )\bso\b(?!\s+(?:that|far|on|much|many|called)\b)|\btherefore\b|\bthus\b|\bhence\b"
    r"|\bconsequently\b|\baccordingly\b|\boverall\b|\bin conclusion\b|\bin summary\b|\bto summari[sz]e\b"
    r"|\bin total\b|\bin short\b|\ball in all\b|\bwhich means\b|\bthis means\b|\bthat means\b|\bmeaning\b"
    r"|\banswer is\b|\banswer\s*:|\bestimate\s*:|\bresult\s*:|\bcomes to\b|\bequals\b|="
)


def _refusals(low: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _REFUSAL.finditer(low)]


def _committed(low: str, starts: list[int], refusals: list[tuple[int, int]], pos: int) -> bool:
    """Whether a value read at ``pos`` is stated despite the refusals (see the module rules)."""
    sent = _sentence_of(starts, pos)
    for r0, r1 in refusals:
        if _sentence_of(starts, r0) != sent or pos < r0:
            continue
        if not _CONTRAST.search(low, r1, pos):
            return False
    return True


_CLAUSE_BREAK = re.compile(r"[;!?\n]|\.\s")


def _conclusion_after(low: str, positions: Sequence[int]) -> int | None:
    """End of the last concluding marker followed by a position in the same clause (``None`` if none)."""
    best = None
    for m in _CONCLUSION.finditer(low):
        if any(p >= m.end() and not _CLAUSE_BREAK.search(low, m.end(), p) for p in positions):
            best = m.end()
    return best


# ----------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num", "word", "sym"
    text: str
    start: int
    end: int
    attached: bool  # no space before


_TOKEN = re.compile(r"(?P<num>(?:\d+(?:[.,]\d+)*|\.\d+)(?:/\d+)?)|(?P<word>[a-z]+(?:'[a-z]+)*)|(?P<sym>\S)")


def _tokens(low: str) -> list[_Tok]:
    out: list[_Tok] = []
    prev_end = -1
    for m in _TOKEN.finditer(low):
        kind = m.lastgroup or "sym"
        out.append(_Tok(kind, m.group(), m.start(), m.end(), m.start() == prev_end))
        prev_end = m.end()
    return out


# ----------------------------------------------------------------------------------------------- numbers


def _wordlist(text: str) -> list[str]:
    return text.split()


_ONES = {w: i for i, w in enumerate(_wordlist(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"))}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(_wordlist("twenty thirty forty fifty sixty seventy eighty ninety"))}
_FRACS = {"half": 0.5, "halves": 0.5, "quarter": 0.25, "quarters": 0.25, "third": 1 / 3, "thirds": 1 / 3}
_INCH_NOT_BEFORE = frozenset(_wordlist(
    "the a an front height width length depth size diameter total this that these those its their his her my our "
    "your between relation terms comparison which each all either both order reality real practice fact any "
    "image picture photo scene view frame"))
_BARE_FOLLOWERS = frozenset(_wordlist(
    "from away apart between tall high wide long deep across above below behind left right closer farther further "
    "off to"))
_OTHER_UNITS = frozenset(_wordlist(
    "percent degrees degree deg kg g lb lbs pounds px pixel pixels seconds second sec s hours hour minutes minute "
    "min d nd st rd th x times fold people objects items square cubic sq"))


def _num_value(s: str) -> float | None:
    if "/" in s:
        a, b = s.split("/", 1)
        num, den = _num_value(a), _num_value(b)
        return num / den if num is not None and den else None
    if "," in s and "." in s:
        s = s.replace(",", "") if s.index(",") < s.index(".") else s.replace(".", "").replace(",", ".")
    elif "," in s:
        parts = s.split(",")
        if len(parts[0]) <= 3 and all(len(p) == 3 for p in parts[1:]):
            s = "".join(parts)
        elif len(parts) == 2:
            s = ".".join(parts)
        else:
            return None
    elif s.count(".") > 1:
        parts = s.split(".")
        if not (len(parts[0]) <= 3 and all(len(p) == 3 for p in parts[1:])):
            return None
        s = "".join(parts)
    try:
        return float(s)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Num:
    value: float
    end: int  # next token index
    words: bool  # spelled out
    fraction: bool  # "half", "a quarter", "three quarters": may be followed by "of a" before the unit
    approx: bool = False  # "a couple of"


@dataclass(frozen=True)
class _Mention:
    lo: float
    hi: float
    kind: str  # "len" (metres), "times", "clock", "bare", "other"
    start: int
    end: int
    flags: tuple[str, ...] = ()

    @property
    def value(self) -> float:
        return (self.lo + self.hi) / 2


class _Reader:
    """Finds every numeric mention of a normalised, lower-cased reply."""

    def __init__(self, low: str) -> None:
        self.low = low
        self.toks = _tokens(low)
        self.n = len(self.toks)

    # -- helpers
    def word(self, i: int) -> str | None:
        return self.toks[i].text if 0 <= i < self.n and self.toks[i].kind == "word" else None

    def sym(self, i: int) -> str | None:
        return self.toks[i].text if 0 <= i < self.n and self.toks[i].kind == "sym" else None

    def words_at(self, i: int, seq: Sequence[str]) -> bool:
        return all(self.word(i + k) == w for k, w in enumerate(seq))

    def and_fraction(self, j: int) -> tuple[float, int]:
        """``and a half`` / ``and a quarter`` / ``and three quarters`` at ``j``."""
        for seq, add in ((("and", "a", "half"), 0.5), (("and", "one", "half"), 0.5), (("and", "a", "quarter"), 0.25),
                         (("and", "three", "quarters"), 0.75), (("and", "a", "third"), 1 / 3)):
            if self.words_at(j, seq):
                return add, j + len(seq)
        return 0.0, j

    # -- numbers
    def number(self, i: int) -> _Num | None:
        t = self.toks[i]
        if t.kind == "num":
            v = _num_value(t.text)
            if v is None:
                return None
            j = i + 1
            if (j < self.n and self.toks[j].kind == "num" and "/" in self.toks[j].text and "/" not in t.text
                    and "." not in t.text and not self.toks[j].attached):
                frac = _num_value(self.toks[j].text)
                if frac is not None and frac < 1:
                    v, j = v + frac, j + 1
            add, j = self.and_fraction(j)
            return _Num(v + add, j, False, v < 1 and "/" in t.text)
        if t.kind != "word":
            return None
        return self.word_number(i)

    def word_number(self, i: int) -> _Num | None:
        w = self.toks[i].text
        nxt = self.word(i + 1)
        if w in ("a", "an"):
            if nxt in _FRACS and nxt not in ("halves", "quarters", "thirds"):
                return _Num(_FRACS[nxt], i + 2, True, True)
            if nxt == "dozen":
                add, j = self.and_fraction(i + 2)
                return _Num(12 + add, j, True, False)
            if nxt in ("hundred", "thousand"):
                return self.cardinal(i, first=1)
            if nxt == "couple":
                j = i + 3 if self.word(i + 2) == "of" else i + 2
                return _Num(2.0, j, True, False, approx=True)
            if nxt in _FULL_UNIT_WORDS:
                return _Num(1.0, i + 1, True, False)
            return None
        if w == "half":
            if self.word(i + 1) in ("a", "an") and self.word(i + 2) == "dozen":
                return _Num(6.0, i + 3, True, False)
            return _Num(0.5, i + 1, True, True)
        if w in ("quarter", "third"):
            return _Num(_FRACS[w], i + 1, True, True)
        if w == "dozen":
            return _Num(12.0, i + 1, True, False)
        if w in _ONES or w in _TENS:
            return self.cardinal(i)
        return None

    def cardinal(self, i: int, first: int | None = None) -> _Num | None:
        total, cur, prev, j = 0, 0, None, i
        if first is not None:  # "a hundred"
            cur, prev, j = first, "ones", i + 1
        while j < self.n:
            w = self.word(j)
            if w is None:
                if self.sym(j) == "-" and self.word(j + 1) in _ONES and prev == "tens":
                    j += 1
                    continue
                break
            if w in _TENS and prev in (None, "hundred", "thousand", "and"):
                cur, prev = cur + _TENS[w], "tens"
            elif w in _ONES and (prev in (None, "hundred", "thousand", "and")
                                 or (prev == "tens" and 0 < _ONES[w] < 10)):
                cur, prev = cur + _ONES[w], "ones"
            elif w == "hundred" and prev in ("ones", "tens") and 0 < cur < 100:
                cur, prev = cur * 100, "hundred"
            elif w == "thousand" and prev in ("ones", "tens", "hundred") and total == 0:
                total, cur, prev = (total + cur) * 1000, 0, "thousand"
            elif (w == "and" and prev in ("hundred", "thousand")
                  and (self.word(j + 1) in _ONES or self.word(j + 1) in _TENS)):
                prev = "and"
            else:
                break
            j += 1
        if prev is None or prev == "and":
            return None
        v = float(total + cur)
        fraction = False
        if self.word(j) == "point":  # "one point five"
            digits, k = "", j + 1
            while k < self.n:
                w = self.word(k)
                if w in _ONES and _ONES[w] < 10:
                    digits += str(_ONES[w])
                elif self.toks[k].kind == "num" and self.toks[k].text.isdigit() and not digits:
                    digits = self.toks[k].text
                else:
                    break
                k += 1
            if digits:
                v, j = v + float("0." + digits), k
        elif self.word(j) in _FRACS and 0 < v < 10 and self.word(j) != "half":  # "three quarters", "two thirds"
            v, j, fraction = v * _FRACS[self.word(j) or ""], j + 1, True
        elif self.word(j) == "half" and v == 1:  # "one half"
            v, j, fraction = 0.5, j + 1, True
        elif self.word(j) == "dozen":
            v, j = v * 12, j + 1
        add, j = self.and_fraction(j)
        return _Num(v + add, j, True, fraction and add == 0)

    # -- units
    def inch_ok(self, k: int) -> bool:
        nxt = self.toks[k + 1] if k + 1 < self.n else None
        if nxt is None or nxt.kind != "word":
            return True
        return nxt.text not in _INCH_NOT_BEFORE

    def unit(self, j: int, num_start: int) -> tuple[str | None, int, bool]:
        """(unit, next index, rejected) after a number ending before token ``j``.

        unit: a length unit, ``"times"``, ``"clock"``, ``"pct"`` or ``None``; rejected: an area, a
        speed or another unit (``"30 degrees"``, ``"3d"``), i.e. not a bare number either.
        """
        if j >= self.n:
            return None, j, False
        t = self.toks[j]
        if t.kind == "sym" and t.text == "-" and t.attached and self.word(j + 1) is not None \
                and (self.word(j + 1) in UNIT_ALIASES or self.word(j + 1) in ("times", "fold")):
            return self.unit(j + 1, num_start)
        if t.kind == "word":
            w = t.text
            if w in ("square", "sq", "cubic", "cu") and self.word(j + 1) in UNIT_ALIASES:
                return None, j + 2, True
            if w in UNIT_ALIASES and not (w == "in" and not self.inch_ok(j)):
                k = j + 1
                after = self.toks[k] if k < self.n else None
                if after is not None and after.attached and (after.kind == "num" or after.text in ("^", "/")):
                    if w == "m" and after.kind == "num" and len(after.text) == 2 and after.text.isdigit():
                        return "m_cm", k + 1, False  # "1m50"
                    return None, k + 1, True  # m2, m^2, m/s
                if self.word(k) in ("squared", "cubed", "per"):
                    return None, k + 1, True
                if self.sym(k) == "." and w in ("ft", "in", "yd", "mi", "cm", "mm", "km", "m") and \
                        k + 1 < self.n and self.toks[k + 1].kind == "num":
                    k += 1  # "3 ft. 2 in."
                return UNIT_ALIASES[w], k, False
            if w in ("times", "fold") or (w == "x" and not (j + 1 < self.n and self.toks[j + 1].attached)):
                return "times", j + 1, False
            if w == "o'clock" or w == "oclock":
                return "clock", j + 1, False
            if w == "o" and (self.word(j + 1) == "clock" or (self.sym(j + 1) == "'" and self.word(j + 2) == "clock")):
                return "clock", j + (2 if self.word(j + 1) == "clock" else 3), False
            if w == "percent":
                return "pct", j + 1, False
            if t.attached or w in _OTHER_UNITS:
                return None, j + 1, True
            return None, j, False
        if t.kind == "sym":
            if t.text in ("'", '"') and t.attached:
                opener = self.toks[num_start - 1] if num_start > 0 else None
                if opener is not None and opener.kind == "sym" and opener.text == t.text and \
                        self.toks[num_start].attached:
                    return None, j, False  # a quoted number: '2'
                return UNIT_ALIASES[t.text], j + 1, False
            if t.text == "%":
                return "pct", j + 1, False
            if t.text in ("°",):
                return None, j + 1, True
            if t.text == ":" and t.attached and j + 1 < self.n and self.toks[j + 1].kind == "num" \
                    and self.toks[j + 1].attached:
                return "colon", j + 1, False
        return None, j, False

    # -- mentions
    def between_before(self, i: int) -> bool:
        return self.word(i - 1) in ("between", "from") or (
            self.word(i - 2) in ("between", "from") and self.word(i - 1) in ("about", "around", "roughly"))

    def quantity(self, i: int) -> tuple[_Mention, int] | None:
        num = self.number(i)
        if num is None:
            return None
        start = self.toks[i].start
        v, j = num.value, num.end
        # "1 200 mm": a space-grouped thousand, only when a unit follows
        t = self.toks[i]
        if (t.kind == "num" and t.text.isdigit() and len(t.text) <= 3 and j == i + 1 and j < self.n
                and self.toks[j].kind == "num" and len(self.toks[j].text) == 3 and self.toks[j].text.isdigit()
                and not self.toks[j].attached):
            grouped_unit, _, _ = self.unit(j + 1, i)
            if grouped_unit in LENGTH_UNITS:
                v, j = float(t.text + self.toks[j].text), j + 1
        unit, k, rejected = self.unit(j, i)
        if unit is None and num.fraction and not rejected:  # "half a metre", "a quarter of a metre"
            k2 = j + 1 if self.word(j) == "of" else j
            k2 = k2 + 1 if self.word(k2) in ("a", "an") else k2
            if k2 > j:
                u2, k3, rej2 = self.unit(k2, i)
                if u2 in LENGTH_UNITS and not rej2:
                    unit, k = u2, k3
        if rejected:
            return _Mention(v, v, "other", start, self.toks[k - 1].end), k
        if unit is None and num.words and not num.fraction and self.toks[i].text in ("one", "a", "an"):
            return None
        flags: list[str] = ["approx"] if num.approx else []
        if unit == "m_cm":  # "1m50": metres and centimetres
            v, unit = v + float(self.toks[k - 1].text) / 100, "m"
        if unit in LENGTH_UNITS:
            per = LENGTH_UNITS[unit]
            add, k = self.and_fraction(k)  # "a metre and a half"
            lo = (v + add) * per
            lo, k = self.compound(lo, unit, k)
            mention = _Mention(lo, lo, "len", start, self.toks[k - 1].end, tuple(flags))
        elif unit == "times":
            inverse = self.word(k) in ("shorter", "smaller", "less", "narrower", "lower", "thinner", "fewer")
            val = 1 / v if inverse and v else v
            mention = _Mention(val, val, "times", start, self.toks[k - 1].end,
                               (*flags, "inverse") if inverse else tuple(flags))
        elif unit == "pct":
            w = self.word(k)
            if w in ("taller", "larger", "bigger", "higher", "more", "longer", "wider", "greater"):
                val, k = 1 + v / 100, k + 1
            elif w in ("shorter", "smaller", "lower", "less", "narrower", "thinner"):
                val, k = 1 - v / 100, k + 1
            elif w in ("of", "as"):
                val = v / 100
            else:
                return _Mention(v, v, "other", start, self.toks[k - 1].end), k
            mention = _Mention(val, val, "times", start, self.toks[k - 1].end, tuple(flags))
        elif unit == "clock":
            mention = _Mention(v, v, "clock", start, self.toks[k - 1].end, tuple(flags))
        elif unit == "colon":  # "3:00" (clock) or "3:2" (ratio)
            other = _num_value(self.toks[k].text) or 0.0
            if len(self.toks[k].text) == 2 and v == int(v) and 1 <= v <= 12 and other < 60:
                k += 1
                if self.unit(k, i)[0] == "clock":
                    k = self.unit(k, i)[1]
                hour = v + other / 60
                mention = _Mention(hour, hour, "clock", start, self.toks[k - 1].end, tuple(flags))
            elif other:
                mention = _Mention(v / other, v / other, "times", start, self.toks[k].end, tuple(flags))
                k += 1
            else:
                return None
        else:
            mention = _Mention(v, v, "bare", start, self.toks[k - 1].end if k > i else self.toks[i].end,
                               tuple(flags))
            k = max(k, j)
        mention, k = self.tolerance_tail(mention, k)
        return self.range_tail(mention, k, unit, i)

    def tolerance_tail(self, m: _Mention, k: int) -> tuple[_Mention, int]:
        """``1.5 ± 0.2 m`` / ``1.5 m ± 20 cm``: the value, flagged ``approx``."""
        if self.sym(k) != "±" or k + 1 >= self.n or m.kind not in ("bare", "len"):
            return m, k
        num2 = self.number(k + 1)
        if num2 is None:
            return m, k
        u2, k2, rej = self.unit(num2.end, k + 1)
        if rej or (m.kind == "bare" and u2 not in LENGTH_UNITS):
            return m, k
        v = m.lo * LENGTH_UNITS[u2] if m.kind == "bare" and u2 is not None else m.lo
        kind = "len" if u2 in LENGTH_UNITS else m.kind
        end = max(k2, num2.end)
        return _Mention(v, v, kind, m.start, self.toks[end - 1].end, (*m.flags, "approx")), end

    def compound(self, metres: float, unit: str, k: int) -> tuple[float, int]:
        """``3 feet 2 inches``, ``1 m 20 cm``, ``5'10"``, ``5 ft 10``."""
        k2 = k + 1 if self.word(k) == "and" or (self.sym(k) == "," and unit == "ft") else k
        if k2 >= self.n or self.toks[k2].kind not in ("num", "word"):
            return metres, k
        nxt = self.number(k2)
        if nxt is None:
            return metres, k
        u2, k3, rej = self.unit(nxt.end, k2)
        if u2 in LENGTH_UNITS and not rej and LENGTH_UNITS[u2] < LENGTH_UNITS[unit] and \
                (self.sym(k) != "," or u2 == "in"):
            add, k3 = self.and_fraction(k3)
            return metres + (nxt.value + add) * LENGTH_UNITS[u2], k3
        if (unit == "ft" and u2 is None and not rej and k2 == k and self.toks[k2].kind == "num"
                and 0 <= nxt.value < 12 and self.word(nxt.end) not in ("to", "or", "and")
                and self.sym(nxt.end) != "-"):
            return metres + nxt.value * LENGTH_UNITS["in"], nxt.end
        return metres, k

    def range_tail(self, m: _Mention, k: int, unit: str | None, i: int) -> tuple[_Mention, int]:
        """``2-3 m``, ``2 to 3 metres``, ``between 2 and 3 m``, ``2 or 3 metres`` after mention ``m``."""
        conn = self.word(k) or self.sym(k)
        ok = conn in ("-", "to") or (conn == "and" and self.between_before(i)) or (conn == "or" and m.kind == "bare")
        if conn == "~" and k + 1 < self.n:  # "3~4 m", "3 ~ 4 m" ("3 m ~ 10 ft" is a restatement)
            ok = m.kind == "bare" or (self.toks[k].attached and self.toks[k + 1].attached)
        if not ok or m.kind == "other" or k + 1 >= self.n:
            return m, k
        j = k + 1
        if self.word(j) in ("about", "around", "roughly", "approximately"):
            j += 1
        if j >= self.n or self.toks[j].kind not in ("num", "word"):
            return m, k
        num2 = self.number(j)
        if num2 is None:
            return m, k
        u2, k2, rej = self.unit(num2.end, j)
        if rej:
            return m, k
        v2 = num2.value
        if m.kind == "bare":
            if u2 is None:
                hi_mention = _Mention(v2, v2, "bare", self.toks[j].start, self.toks[num2.end - 1].end)
                lo_val = m.lo
                kind = "bare"
            elif u2 in LENGTH_UNITS:
                per = LENGTH_UNITS[u2]
                add, k2 = self.and_fraction(k2)
                lo_val, v2, kind = m.lo * per, (v2 + add) * per, "len"
                hi_mention = _Mention(v2, v2, kind, self.toks[j].start, self.toks[k2 - 1].end)
            elif u2 == "times" or u2 == "clock":
                lo_val, kind = m.lo, u2
                hi_mention = _Mention(v2, v2, kind, self.toks[j].start, self.toks[k2 - 1].end)
            else:
                return m, k
        elif m.kind == "len":
            if u2 in LENGTH_UNITS:
                add, k2 = self.and_fraction(k2)
                v2 = (v2 + add) * LENGTH_UNITS[u2]
            elif u2 is None and unit in LENGTH_UNITS and conn != "or" and not num2.words:
                v2 = v2 * LENGTH_UNITS[unit]
            else:
                return m, k
            lo_val, kind = m.lo, "len"
            hi_mention = _Mention(v2, v2, kind, self.toks[j].start, self.toks[k2 - 1].end)
        elif m.kind in ("times", "clock") and (u2 == m.kind or u2 is None):
            lo_val, kind = m.lo, m.kind
            hi_mention = _Mention(v2, v2, kind, self.toks[j].start, self.toks[max(k2, num2.end) - 1].end)
        else:
            return m, k
        if hi_mention.lo == lo_val:
            return _Mention(lo_val, lo_val, kind, m.start, hi_mention.end, m.flags), max(k2, num2.end)
        flags = tuple(dict.fromkeys((*m.flags, "range")))
        return _Mention(lo_val, hi_mention.lo, kind, m.start, hi_mention.end, flags), max(k2, num2.end)

    def mentions(self) -> list[_Mention]:
        out: list[_Mention] = []
        i = 0
        while i < self.n:
            if self.toks[i].kind in ("num", "word"):
                found = self.quantity(i)
                if found is not None:
                    m, j = found
                    out.append(self.decorate(m, i))
                    i = max(j, i + 1)
                    continue
            i += 1
        return out

    def decorate(self, m: _Mention, i: int) -> _Mention:
        """Sign, hedge and bound flags from the words around a mention."""
        flags = list(m.flags)
        lo, hi, start = m.lo, m.hi, m.start
        prev = self.toks[i - 1] if i > 0 else None
        if prev is not None and prev.kind == "sym" and prev.text == "-" and self.toks[i].attached and (
                i < 2 or not prev.attached or self.toks[i - 2].kind == "sym"):
            lo, hi, start = -hi, -lo, prev.start
            flags.append("negative")
        elif self.word(i - 1) in ("minus", "negative"):
            lo, hi = -hi, -lo
            flags.append("negative")
        before = self.low[max(0, start - 40):start]
        after = self.low[m.end:m.end + 30]
        if _APPROX_BEFORE.search(before) or _APPROX_AFTER.match(after):
            flags.append("approx")
        elif _BOUND_BEFORE.search(before) or _BOUND_AFTER.match(after):
            flags.append("bound")
        return _Mention(lo, hi, m.kind, start, m.end, tuple(dict.fromkeys(flags)))


_APPROX_BEFORE = re.compile(
    r"(?:\babout|\baround|\bapproximately|\bapprox\.?|\broughly|\bcirca|\bca\.|\bnearly|\balmost|\bclose to|\bsome"
    r"|\bestimated(?: at)?|\ban estimate of|\ba bit (?:over|under|more than|less than)"
    r"|\ba little (?:over|under|more than|less than)|\bjust (?:over|under|about|shy of)"
    r"|\bslightly (?:over|under|more than|less than|above|below)"
    r"|\bmore or less|\bapproximately about|\bon the order of|\bin the region of|\bsomewhere around|~|≈|\+/-|±)\s*$")
_APPROX_AFTER = re.compile(r"[\s,]*(?:or so\b|give or take\b|-?ish\b|more or less\b|\(?approx(?:imately|\.)?)")
_BOUND_BEFORE = re.compile(
    r"(?:\bless than|\bmore than|\bunder|\bover|\bbelow|\babove|\bat least|\bat most|\bup to|\bno more than"
    r"|\bno less than|\bgreater than|\bfewer than|\bshorter than|\blonger than|\bwell (?:over|under)|\bwithin"
    r"|\bnot (?:more|less) than|\bexceeding|\bbeyond|<=?|>=?|≤|≥)\s*$")
_BOUND_AFTER = re.compile(
    r"\s*(?:or (?:more|less|fewer|greater|smaller|longer|shorter|above|below|under|over)\b|at (?:most|least)\b"
    r"|max(?:imum)?\b|min(?:imum)?\b|\+(?!\d))")
_BARE_PRE = re.compile(
    r"(?:\babout|\baround|\bapproximately|\bapprox\.?|\broughly|\bnearly|\balmost|\bis|\bbe|\bof|\banswer|\bestimate"
    r"|\bless than|\bmore than|\bunder|\bover|\bat least|\bat most|\bup to|~|≈|<|>|=|:)\s*$")
_WORD_RATIOS = re.compile(
    r"\b(?P<w>twice|thrice|double|triple|quadruple|half)\b(?=\s+(?:as|the|its|their|that|his|her)\b)"
    r"|\b(?P<w2>twice|thrice|double|triple|quadruple)\b"
    r"|\b(?P<same>(?:the )?same (?:height|size|width|length|as)|equally (?:tall|high|big|wide|large)|as tall as"
    r"|equal (?:height|size|in height))\b")
_WORD_RATIO_VALUES = {"twice": 2.0, "thrice": 3.0, "double": 2.0, "triple": 3.0, "quadruple": 4.0, "half": 0.5}
_CLOCK_CONVENTION_AFTER = re.compile(
    r"\s*(?:is|being|=|means|represents|denotes|indicates|corresponds to|pointing|points|as|refers to|facing|"
    r"is defined as|is taken as)\b[^.;]{0,40}?\b(?:straight|direct|forward|ahead|away|front|behind|back|north|up|"
    r"towards?|the camera|facing|the direction)")
# counts said in words ("one", "none", "no other objects", "zero"); digits and "three objects" are mentions
_COUNT_WORDS = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|zero|none|nothing|"
                          r"no(?=\s+(?:other\s+)?(?:objects?|things?|items?)\b))\b")
_CLOCK_CONVENTION_BEFORE = re.compile(r"\b(?:with|where|if|assuming|taking|treating|considering|given)\s+$")


_NOT_BARE_BEFORE = re.compile(
    r"(?:[\[(,]|\b(?:step|option|item|figure|image|object|region|id|label|box|point|no\.?|number|#))\s*$")


def _bare_ok(low: str, m: _Mention) -> bool:
    after = low[m.end:m.end + 24]
    before = low[max(0, m.start - 30):m.start]
    list_marker = (re.search(r"(?:^|\n)\s*$", before) is not None and re.match(r"[.)]\s+\S", after) is not None)
    if list_marker or _NOT_BARE_BEFORE.search(before):
        return False
    if re.match(r"\s*(?:$|[.,;!?)\]\n]|and\b|but\b)", after):
        return True
    nxt = re.match(r"\s*([a-z]+)", after)
    return _BARE_PRE.search(before) is not None and (nxt is None or nxt.group(1) in _BARE_FOLLOWERS)


def _same(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _drop_alternatives(low: str, cands: list[_Mention]) -> list[_Mention]:
    """Drop restatements: "1.5 m (5 ft)", "60 cm or 2 feet", "2 m / 6.6 ft"."""
    out: list[_Mention] = []
    for m in cands:
        if out:
            gap = low[out[-1].end:m.start]
            if re.fullmatch(r"\s*[(\[]\s*(?:about|approx\.?|approximately|roughly|around|~|≈|or|i\.e\.,?|ie)?\s*", gap):
                continue
            if re.fullmatch(r"\s*,?\s*(?:or|/|=|i\.e\.,?|that is|which is|aka|equivalently)\s*(?:about|approx\.?|"
                            r"approximately|roughly|around|~|≈)?\s*", gap) and _same(m.value, out[-1].value, 0.2):
                continue
        out.append(m)
    return out


_REF_MARKER = re.compile(r"\b(?:given(?: that)?|using|assuming|assume|since|because|considering|knowing(?: that)?|"
                         r"based on|compared (?:to|with)|relative to|if|taking|for (?:reference|comparison|scale))\b")
# a clause naming a reference (anywhere in it), or stating a typical size (from that word on)
_REF_CLAUSE = re.compile(r"\b(?:as (?:a )?reference|for reference|reference (?:object|point|size|height)|for scale|"
                         r"as a (?:guide|yardstick|benchmark))\b")
_REF_WORDS = re.compile(r"\b(?:typical(?:ly)?|standard|usually|on average|average|normally|generally|commonly|"
                        r"known (?:size|height|width|length))\b")
_ANCHOR = re.compile(r"\b(?:appears?|looks?|seems?|measures?|estimated?|i(?:'d| would)? estimate)\b[^,;.]*$")
_Q_STOP = frozenset(_wordlist(
    "how what which who whose where is are was were the a an of between and from to in on at far wide tall high long "
    "deep big large small distance height width length depth size apart away much many meter metre feet foot inch cm "
    "centimeter centimetre estimate estimated approximately roughly approximate image picture photo scene camera "
    "this that these those doe do me you tell give measure it its their minimum maximum min max direct horizontal "
    "vertical horizontally vertically please answer object top bottom base surface edge side part center centre point "
    "two one gap space each other could can would will your closest nearest shortest"))
# (the question asks it, words that state it near a length, words that state it unmistakably)
_Q_DIMENSIONS = (
    (re.compile(r"\b(?:tall|height|high)\b"), frozenset(_wordlist("tall height high"))),
    (re.compile(r"\b(?:wide|width|broad)\b"), frozenset(_wordlist("wide width across broad"))),
    (re.compile(r"\b(?:long|length)\b"), frozenset(_wordlist("long length"))),
    (re.compile(r"\b(?:deep|depth)\b"), frozenset(_wordlist("deep depth"))),
    (re.compile(r"\b(?:far|distance|apart|away|between|gap)\b"),
     frozenset(_wordlist("apart away from distance between far gap"))),
)
_DIMENSION_WORDS = (frozenset(_wordlist("tall height high")), frozenset(_wordlist("wide width across broad")),
                    frozenset(_wordlist("long length")), frozenset(_wordlist("deep depth")),
                    frozenset(_wordlist("apart away distance far gap")))


def _plain_words(text: str) -> set[str]:
    return {singular(w) for w in re.findall(r"[a-z]+", text)}


def _quantity_clauses(low: str) -> list[tuple[int, int]]:
    """Clauses of a reply (commas, semicolons, sentence ends; not inside parentheses)."""
    bounds, depth = [0], 0
    for i, ch in enumerate(low):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and (ch in ";!?\n" or (ch in ",:." and (i + 1 == len(low) or low[i + 1].isspace()))):
            bounds.append(i + 1)
    bounds.append(len(low))
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _reference_spans(low: str, clauses: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where a reply states a reference object's size: "Given that a typical counter is 36 in tall, ..."."""
    out = []
    for a, b in clauses:
        if _REF_CLAUSE.search(low, a, b):
            out.append((a, b))
            continue
        starts = [m.start() for rx in (_REF_MARKER, _REF_WORDS) for m in [rx.search(low, a, b)] if m is not None]
        if starts:
            out.append((min(starts), b))
    return out


def _by_subject(low: str, pool: list[_Mention], clauses: list[tuple[int, int]], question: str) -> _Mention:
    """The length stated of the question's subject (its noun before the length, its dimension around it)."""
    q = _lower(normalize_text(question))
    subject = {w for w in _plain_words(q) if w not in _Q_STOP and len(w) > 1}
    dims: frozenset[str] = frozenset()
    others: set[str] = set()
    for k, (rx, words) in enumerate(_Q_DIMENSIONS):
        if rx.search(q):
            dims = words
            others = {w for j, ws in enumerate(_DIMENSION_WORDS) if j != k for w in ws} - words
            break
    best, best_score = pool[0], 0
    for n, c in enumerate(pool):
        a, b = next(((a, b) for a, b in clauses if a <= c.start < b), (0, len(low)))
        before = low[max(a, pool[n - 1].end if n else 0):c.start]
        after = low[c.end:min(b, pool[n + 1].start if n + 1 < len(pool) else len(low))]
        near = _plain_words(" ".join(before.split()[-4:] + after.split()[:3]))
        score = 2 * bool(subject & _plain_words(before)) + bool(dims & _plain_words(before + " " + after))
        score += _ANCHOR.search(before) is not None
        score -= 2 * bool(others & near and not dims & near)  # "1.6 m tall" does not answer "how far"
        if score > best_score:
            best, best_score = c, score
    return best


def _quantity_result(low: str, clean: str, cands: list[_Mention], flags_extra: tuple[str, ...],
                     question: str | None = None, lengths: bool = False) -> ParsedAnswer:
    starts = _sentence_starts(clean)
    refusals = _refusals(low)
    if not cands:
        return ParsedAnswer("refusal") if refusals else ParsedAnswer("no_answer")
    flags: list[str] = list(flags_extra)
    chosen = cands[0]
    if len({round(c.value, 9) for c in cands}) > 1:
        flags.append("multiple")
        pool = cands
        clauses = _quantity_clauses(low) if lengths else []
        if lengths:  # a reference object's size is not the answer
            refs = _reference_spans(low, clauses)
            outside = [c for c in pool if not any(a <= c.start < b for a, b in refs)]
            if outside and len(outside) < len(pool):
                pool = outside
                flags.append("reference")
        chosen = pool[0]
        if len({round(c.value, 9) for c in pool}) > 1:
            marker = _conclusion_after(low, [c.start for c in pool])
            if marker is not None:
                chosen = next(c for c in pool if c.start >= marker)
                flags.append("conclusion")
            elif lengths and question:
                chosen = _by_subject(low, pool, clauses, question)
                if chosen is not pool[0]:
                    flags.append("subject")
    if refusals:
        if not _committed(low, starts, refusals, chosen.start):
            return ParsedAnswer("refusal", flags=("value_in_refusal",))
        flags.append("hedged")
    flags = [*chosen.flags, *flags]
    return ParsedAnswer("range" if chosen.lo != chosen.hi else "ok", chosen.value,
                        tuple(dict.fromkeys(flags)), clean[chosen.start:chosen.end])


# Q-Spatial Bench's answer format: \scalar{VALUE} \distance_unit{UNIT} (also without backslashes, spaced, escaped)
_BOXED = re.compile(r"(?<![A-Za-z])\\{0,2}scalar\s*\{\s*([^{}]*?)\s*\}"
                    r"(?:[\s,;:\\\"'`]*?(?<![A-Za-z])\\{0,2}distance\s*\\?_?\s*unit\s*\{\s*([^{}]*?)\s*\})?",
                    re.IGNORECASE)


def _boxed(clean: str, unit: str) -> ParsedAnswer | None:
    """The last well-formed ``\\scalar{..} \\distance_unit{..}`` answer of a reply, read as "VALUE UNIT"."""
    refused = bool(_refusals(_lower(clean)))
    for m in reversed(list(_BOXED.finditer(clean))):
        unit_word = (m.group(2) or "").strip()
        if not unit_word:  # "\scalar{3} feet", "\scalar{3} \text{ft}"
            after = re.match(r"\s*([A-Za-z]+\.?|[\"'])", clean[m.end():])
            if after is not None and after.group(1).lower().rstrip(".") in UNIT_ALIASES:
                unit_word = after.group(1)
        res = parse_quantity(f"{m.group(1).strip()} {unit_word}".strip(), unit)
        if res.answered:
            flags = (*res.flags, "boxed", *(("hedged",) if refused else ()))
            return ParsedAnswer(res.status, res.value, tuple(dict.fromkeys(flags)), clean[m.start():m.end()])
    return None


def parse_quantity(text: str, unit: str = "m", question: str | None = None) -> ParsedAnswer:
    """The length / ratio / clock hour a reply states (rules in the module docstring).

    ``unit``: ``"m"`` (value in metres) or another unit of :data:`LENGTH_UNITS` (value in that unit),
    ``"ratio"`` (a pure number) or ``"clock"`` (an hour 1-12, ``int``; a range's midpoint is a float).
    ``question``: when a reply states several lengths, the one of the question's subject is preferred.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if unit not in ("ratio", "clock", "count") and unit not in LENGTH_UNITS:
        raise ValueError(f"unit must be 'ratio', 'clock', 'count' or a length unit {tuple(LENGTH_UNITS)}, "
                         f"got {unit!r}")
    clean = normalize_text(text)
    if unit in LENGTH_UNITS and "scalar" in clean.lower():
        boxed = _boxed(clean, unit)
        if boxed is not None:
            return boxed
    low = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", _lower(clean))  # "two-and-a-half", "twenty-five"
    reader = _Reader(low)
    mentions = reader.mentions()
    extra: tuple[str, ...] = ()
    if unit == "ratio":
        cands = [m for m in mentions if m.kind == "times"]
        for wm in _WORD_RATIOS.finditer(low):
            if any(m.start <= wm.start() < m.end and m.kind == "times" for m in mentions):
                continue
            if wm.group("same"):
                continue
            w = wm.group("w") or wm.group("w2")
            cands.append(_Mention(_WORD_RATIO_VALUES[w], _WORD_RATIO_VALUES[w], "times", wm.start(), wm.end()))
        cands.sort(key=lambda m: m.start)
        if not cands:
            cands = [m for m in mentions if m.kind == "bare" and _bare_ok(low, m)]
        if not cands:
            same = _WORD_RATIOS.search(low)
            if same and same.group("same"):
                cands = [_Mention(1.0, 1.0, "times", same.start(), same.end(), ("implicit",))]
        cands = _drop_alternatives(low, cands)
        return _quantity_result(low, clean, cands, extra)
    if unit == "count":
        cands = [m for m in mentions if m.kind in ("bare", "other") and m.lo == int(m.lo) and m.hi == int(m.hi)
                 and m.lo >= 0]
        for wm in _COUNT_WORDS.finditer(low):
            if not any(m.start <= wm.start() < m.end for m in mentions):
                word = wm.group(1)
                n = _ONES.get(word, 0) if word in _ONES else 0
                cands.append(_Mention(float(n), float(n), "bare", wm.start(), wm.end(), ("implicit",) if not n
                                      else ()))
        cands.sort(key=lambda m: m.start)
        res = _quantity_result(low, clean, cands, extra)
        if res.status == "ok" and res.value is not None:
            return ParsedAnswer("ok", int(res.value), res.flags, res.span)
        return res
    if unit == "clock":
        hours = [m for m in mentions if m.kind == "clock" and m.lo >= 1 and m.hi < 13]
        if not hours:
            hours = [m for m in mentions if m.kind == "bare" and m.lo == int(m.lo) and m.hi == int(m.hi)
                     and 1 <= m.lo <= 12 and 1 <= m.hi <= 12 and _bare_ok(low, m)]
            extra = ("unit_assumed",) if hours else ()
        kept = [m for m in hours if not (_CLOCK_CONVENTION_AFTER.match(low, m.end)
                                         or _CLOCK_CONVENTION_BEFORE.search(low[max(0, m.start - 20):m.start]))]
        cands = kept or hours
        res = _quantity_result(low, clean, cands, extra)
        if res.status == "ok" and res.value is not None and float(res.value) == int(res.value):
            hour = int(res.value)
            return ParsedAnswer("ok", 12 if hour == 0 else hour, res.flags, res.span)
        if res.status == "range":
            chosen = next(m for m in cands if clean[m.start:m.end] == res.span)
            a, b = chosen.lo % 12, chosen.hi % 12
            d = (b - a) % 12
            mid = (a + d / 2) % 12 if d <= 6 else (b + (12 - d) / 2) % 12
            return ParsedAnswer("range", mid if mid else 12.0, res.flags, res.span)
        return res
    per = LENGTH_UNITS[unit]
    cands = [m for m in mentions if m.kind == "len"]
    if not cands:
        cands = [m for m in mentions if m.kind == "bare" and _bare_ok(low, m)]
        extra = ("unit_assumed",) if cands else ()
    cands = _drop_alternatives(low, cands)
    res = _quantity_result(low, clean, cands, extra, question, lengths=True)
    if res.answered and per != 1.0 and res.value is not None:
        return ParsedAnswer(res.status, float(res.value) / per, res.flags, res.span)
    return res


# ----------------------------------------------------------------------------------------------- yes / no

_NO_LEAD = re.compile(
    r"(?:absolutely|certainly|definitely|of course|surely|probably|likely|apparently|i (?:think|believe|guess|suppose))"
    r" not|not (?:at all|really|quite|exactly|correct|true|right|"
    r"so|the case)|(?:that'?s|that is|this is|it'?s|it is|you'?re|you are) (?:not (?:correct|right|true|the case)|"
    r"incorrect|wrong|false|untrue|mistaken)|i (?:don'?t|do not|wouldn'?t|would not) (?:think|believe|say) so|"
    r"by no means|no way|"
    r"nope|nah|negative|incorrect|false|wrong|no(?![a-z'])")
_YES_LEAD = re.compile(
    r"(?:yes|yeah|yep|yup|yea|correct|indeed|absolutely|affirmative|certainly|definitely|surely|sure|of course|"
    r"exactly|true|right|no doubt|without (?:a )?doubt|(?:that'?s|that is|this is|it'?s|it is|you'?re|you are) "
    r"(?:correct|right|true|the case|accurate)|i (?:think|believe) so|(?:it )?(?:appears|seems) so"
    r"|it (?:appears|seems|looks) (?:like it|that way))(?![a-z'])")
_FILLER = re.compile(
    r"(?:[\s\W_]+|(?:well|actually|hmm+|ok(?:ay)?|oh|ah|um+|uh+|so|then|thus|therefore|hence|overall|in short|"
    r"in conclusion|to answer (?:your|the) question|(?:final |short )?answer|(?:the |my )(?:short |final )?answer is|"
    r"i (?:would|'d) say|i think|i believe|i guess|after (?:careful )?(?:analysis|consideration)|"
    r"(?:based on|looking at|from|in) (?:the|this) (?:image|picture|photo|scene|view))(?![a-z']))")
_NO_NOT_BEFORE = frozenset(_wordlist(
    "one longer more less matter doubt idea object objects other such part single visible clear difference"))
_EXPLICIT_YN = re.compile(
    r"\b(?:answer(?: is)?|i(?:'d| would) say|so|therefore|thus|hence|i think|i believe|i guess"
    r"|i(?:'d| would) guess|probably|likely|my (?:best )?guess is|i(?:'m| am)? lean(?:ing)?(?: towards?)?)"
    r"\s*[:,]?\s*[\"']?(yes|no)(?![a-z'])"
    # a yes / no closing its sentence after a comma: "After examining the positions, no."
    r"|[,;]\s*[\"']?(yes|no)[\"']?\s*(?=[.!,;]|$)")
# "It isn't.", "It does not appear so.", "Not quite.": a denial with the relation left implicit
_ELLIPTIC_NO = re.compile(
    r"\W*(?:no,?\s*)?(?:[\w'\[\]]+\s+){0,5}?(?:(?:is|are|does|do|was|were|has|have|can|will|did)"
    r"(?:\s+not|n't)|isn't|aren't|doesn't|don't|wasn't|weren't|hasn't|haven't|can't|won't|didn't)"
    r"(?:\s+(?:appear|seem|look)(?:\s+(?:so|to be(?: the case)?|like it|that way))?|\s+(?:so|the case|that way|"
    r"like that))?\W*")
# words that state some relation (used when the question's relation is not known)
_ANY_RELATION = re.compile(r"\b(?:on|onto|in|inside|into|next to|near|beside|touching|against|between|within|facing|"
                           r"close to|far from|aligned|same|equal)\b")


def _lead_at(low: str, pos: int) -> tuple[bool, int, int] | None:
    """(polarity, start, end) of a yes / no lead at ``pos`` after fillers."""
    p = pos
    for _ in range(12):
        for pol, rx in ((False, _NO_LEAD), (True, _YES_LEAD)):
            m = rx.match(low, p)
            if not m:
                continue
            word = m.group()
            rest = low[m.end():m.end() + 20]
            if word == "no":
                nxt = re.match(r"\s+([a-z]+)", rest)
                if nxt and nxt.group(1) in _NO_NOT_BEFORE:
                    continue  # "no doubt", "no object is ..."
            last = word.rsplit(" ", 1)[-1]
            if last in ("right", "true", "sure", "exactly", "correct", "false", "wrong", "negative") and \
                    not re.match(r"\s*(?:$|[,.;:!?)\-])" if last == "right" or " " not in word else
                                 r"\s*(?:$|[,.;:!?)\-]|that\b)", rest):
                continue
            return pol, m.start(), m.end()
        f = _FILLER.match(low, p)
        if not f or f.end() == p:
            return None
        p = f.end()
    return None


def parse_yes_no(text: str, question: str | None = None, *, qtype: str | None = None,
                 subjects: Sequence[str] = ()) -> ParsedAnswer:
    """The yes / no a reply states (``value``: bool; rules in the module docstring).

    ``question`` (and ``qtype``, e.g. ``"left_predicate"``; ``subjects``, the names of the compared
    objects in role order) let a reply that only states a relation be read: "In fact, A is to the right
    of B." answers "Is A to the left of B?" with no.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    clean = normalize_text(text)
    low = _lower(clean)
    starts = _sentence_starts(clean)
    refusals = _refusals(low)
    if re.search(r"\byes\s*(?:and|&)\s*no\b|\bno\s*(?:and|&)\s*yes\b", low):
        return ParsedAnswer("ambiguous", flags=("both",))
    masked = re.sub(r"\byes\s*(?:or|/)\s*no\b|\bno\s*(?:or|/)\s*yes\b", lambda m: " " * len(m.group()), low)
    decisive: list[tuple[int, bool, int]] = []
    clause_starts = sorted({*starts, *(m.end() for m in re.finditer(r"[;:]\s*", masked))})
    for s in clause_starts:
        lead = _lead_at(masked, s)
        if lead is not None:
            decisive.append((lead[1], lead[0], lead[2]))
    for m in _EXPLICIT_YN.finditer(masked):
        k = 1 if m.group(1) else 2
        decisive.append((m.start(k), m.group(k) == "yes", m.end(k)))
    for m in re.finditer(r"\byes\b", masked):
        decisive.append((m.start(), True, m.end()))
    decisive.sort()
    if decisive:
        pos, pol, end = decisive[0]
        if refusals:
            same = [r for r in refusals if _sentence_of(starts, r[0]) == _sentence_of(starts, pos)]
            if not pol and any(r[0] >= end for r in same):
                return ParsedAnswer("refusal", flags=("value_in_refusal",))
            if not _committed(low, starts, refusals, pos):
                return ParsedAnswer("refusal", flags=("value_in_refusal",))
        if any(p != pol for _, p, _ in decisive):
            return ParsedAnswer("ambiguous", flags=("both",), span=clean[pos:end])
        flags = ("hedged",) if refusals else ()
        return ParsedAnswer("ok", pol, flags, clean[pos:end])
    frame = _question_frame(question, qtype, subjects, yes_no=True) if (question or qtype) else None
    if frame is not None:
        by_relation = _yes_no_by_relation(clean, low, frame)
        if by_relation is not None:
            value, (a, b) = by_relation
            if value is _CONFLICT:
                return ParsedAnswer("ambiguous", flags=("relation",))
            if refusals and not _committed(low, starts, refusals, a):
                return ParsedAnswer("refusal", flags=("value_in_refusal",))
            flags = ("relation", "implicit", "hedged") if refusals else ("relation", "implicit")
            return ParsedAnswer("ok", bool(value), flags, clean[a:b])
    if refusals:
        return ParsedAnswer("refusal")
    short = re.fullmatch(r"\W*(?:it|they|that|this|he|she|there|which)\s+(?:is|are|does|do|was|were|has|have|can|"
                         r"will|did)(?:\s+(?:indeed|so|true|correct|the case))?\W*", low)
    if short:
        return ParsedAnswer("ok", True, ("implicit",), clean)
    if _ELLIPTIC_NO.fullmatch(re.sub(r"'(s|re) not\b", lambda m: {"s": " is", "re": " are"}[m.group(1)] + " not", low)):
        return ParsedAnswer("ok", False, ("implicit",), clean)
    first = low[:starts[1]] if len(starts) > 1 else low
    neg = re.search(r"\b(?:not|never|neither|nor|no longer)\b|n't\b", first)
    if neg and frame is None and (_relations(first) or _ANY_RELATION.search(first)):
        # a denied relation, the question unknown: "The mug is not to the left of the plate."
        return ParsedAnswer("ok", False, ("implicit",), clean[neg.start():neg.end()])
    return ParsedAnswer("no_answer")


def _yes_no_by_relation(clean: str, low: str, frame: _Frame) -> tuple[object, tuple[int, int]] | None:
    """(yes / no / conflict, span) from the relations a reply states on the asked axis; None if it states none."""
    words = _choice_words(low)
    hits = _option_hits(words, (frame.subject, frame.obj))[0] if frame.subject or frame.obj else []
    stated = _stated_relations(clean, low, words, hits, frame)
    if not stated:
        return None
    decisions: list[tuple[int, object]] = []
    for st in stated:
        role = st.subject
        if role is None:  # "It is on the right.", "To the right of the plate.": the question's subject
            role = 1 if st.other == 0 else 0
        decisions.append((st.pos, st.agrees if role == 0 else not st.agrees))
    value = _agreeing(decisions, low)
    pick = next((st for st, (_, v) in zip(stated, decisions, strict=True) if v == value), stated[0])
    return value, pick.span


# ----------------------------------------------------------------------------------------------- choice

_ARTICLES = frozenset({"a", "an", "the"})
_QUAL_MAP = {
    "left": "~left", "leftmost": "~left", "right": "~right", "rightmost": "~right",
    "nearer": "~near", "nearest": "~near", "closer": "~near", "closest": "~near",
    "farther": "~far", "farthest": "~far", "further": "~far", "furthest": "~far",
    "higher": "~high", "highest": "~high", "upper": "~high", "uppermost": "~high", "topmost": "~high",
    "lower": "~low", "lowest": "~low", "bottommost": "~low",
    "front": "~front", "foreground": "~front", "back": "~back", "rear": "~back", "background": "~back",
    "middle": "~middle", "center": "~middle", "centre": "~middle", "central": "~middle",
}
_PREPOSITIONS = frozenset(_wordlist(
    "than not from to of with versus vs behind above below under beneath over beside besides by against unlike like "
    "past toward towards into onto on at in near between among"))
_OBJECT_MARKERS = _PREPOSITIONS | {"instead", "comparing", "compare", "whether", "either", "neither", "as"}
_GENERIC = frozenset(_wordlist("one ones object objects thing things item items"))
_BOTH = re.compile(r"\b(?:both|either|neither|equally|same|equal|identical|tied|a tie|similar(?:ly)?)\b")
# an option letter opening the reply: "B", "(b)", "[A]", "A.", "Option B", "The answer is (B)"
_LETTER = re.compile(r"\W*(?:(?:the\s+)?(?:correct\s+|final\s+)?(?:option|answer|choice)(?:\s+is)?\s*:?\s*)?"
                     r"[\[(]?([a-h])[\])]?(?:[.:)\]]|\s*$)")
# ... or anywhere: "[A]", "(B)", "option C", "answer: D" (an uppercase letter alone, never the article "a")
_LETTER_ANY = re.compile(r"[\[(]([A-Ha-h])[\])]|\b(?:[Oo]ption|[Cc]hoice|[Aa]nswer(?: is)?)\s*:?\s*([A-H])\b"
                         r"(?=\s*(?:$|[.,;:!)\]\n]))|(?<![\w'])([A-H])(?=\s*(?:$|[.:)\]]))")
_ORDINAL = re.compile(r"\bthe (first|second|third|fourth|former|latter|last)\b"
                      r"(?!\s+(?:time|step|glance|place|thing i|row|column|image|picture|photo|frame|sentence|word))"
                      r"|\b(first|second|third|fourth|1st|2nd|3rd|4th) "
                      r"(?:one|option|object|region|item|choice|candidate)\b")
_ORDINAL_INDEX = {"first": 0, "1st": 0, "former": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3}


@dataclass(frozen=True)
class _W:
    w: str
    start: int
    end: int


def _choice_words(low: str) -> list[_W]:
    low = re.sub(r"\b(left|right|top|bottom|upper)-(most)\b", r"\1\2", low)
    out: list[_W] = []
    for m in re.finditer(r"[a-z0-9]+(?:'[a-z]+)?|[.,;:!?]", low):
        w = m.group()
        if w in _ARTICLES:
            continue
        if w.endswith("'s"):
            w = w[:-2]
        w = _QUAL_MAP.get(w, w)
        if not w.startswith("~") and w[0].isalpha():
            w = singular(w)
        out.append(_W(w, m.start(), m.end()))
    return out


def _phrase_hits(words: list[_W], phrase: list[str]) -> list[tuple[int, int]]:
    n = len(phrase)
    seq = [w.w for w in words]
    return [(i, i + n) for i in range(len(seq) - n + 1) if n and seq[i:i + n] == phrase]


def _core(phrase: list[str]) -> list[str]:
    for i, w in enumerate(phrase):
        if i > 0 and w in _PREPOSITIONS:
            return phrase[:i]
    return phrase


@dataclass(frozen=True)
class _Hit:
    option: int
    i: int  # word index
    j: int
    start: int  # char offset
    obj: bool  # right after a preposition / "than" / "not"
    negated: bool


def _option_hits(words: list[_W], options: Sequence[str]) -> tuple[list[_Hit], bool]:
    """Mentions of the options in the reply; the bool says whether a spatial qualifier went unmatched."""
    phrases = [[w.w for w in _choice_words(_lower(normalize_text(o))) if w.w[0].isalnum() or w.w[0] == "~"]
               for o in options]
    spans: list[tuple[int, int, int]] = []
    for k, ph in enumerate(phrases):
        for i, j in _phrase_hits(words, ph):
            spans.append((k, i, j))
    cores = [_core(ph) for ph in phrases]
    for k, core in enumerate(cores):
        if core == phrases[k] or not core or sum(1 for c in cores if c == core) > 1:
            continue
        if any(_phrase_hits([_W(w, 0, 0) for w in ph], core) for o, ph in enumerate(phrases) if o != k):
            continue
        for i, j in _phrase_hits(words, core):
            spans.append((k, i, j))
    # a match inside a longer match of another option is not a mention ("mug" in "red mug")
    spans = [s for s in spans if not any(t != s and t[1] <= s[1] and s[2] <= t[2] and (t[2] - t[1]) > (s[2] - s[1])
                                         for t in spans)]
    if not spans:
        content = [{w for w in ph if w not in _PREPOSITIONS and w not in _GENERIC} for ph in phrases]
        distinct = [{w for w in c if sum(1 for other in content if w in other) == 1} for c in content]
        plain = [(k, i, i + 1) for i, w in enumerate(words) for k, d in enumerate(distinct)
                 if w.w in d and not w.w.startswith("~")]
        qual = [(k, i, i + 1) for i, w in enumerate(words) for k, d in enumerate(distinct)
                if w.w in d and w.w.startswith("~")]
        spans = plain or qual
    hits: list[_Hit] = []
    for k, i, j in sorted(set(spans), key=lambda s: (s[1], s[0])):
        prev = words[i - 1].w if i > 0 else ""
        obj = prev in _OBJECT_MARKERS
        if prev in ("and", "or") and hits and hits[-1].j == i - 1 and hits[-1].obj:
            obj = True  # "between the chair and the table, ..."
        hits.append(_Hit(k, i, j, words[i].start, obj, prev == "not"))
    all_option_words = {w for ph in phrases for w in ph}
    unmatched_qual = any(w.w.startswith("~") and w.w not in all_option_words for w in words)
    return hits, unmatched_qual


def _verb_negated(words: list[_W], hit: _Hit) -> bool:
    nxt = [w.w for w in words[hit.j:hit.j + 3]]
    if nxt and nxt[0] in ("isn't", "aren't", "wasn't", "weren't", "doesn't", "don't"):
        return True
    return len(nxt) >= 2 and nxt[0] in ("is", "are", "was", "were", "doe", "does", "do") and nxt[1] == "not"


def _letter_pick(clean: str, low: str, n: int) -> tuple[int, int, int] | None:
    """(option index, start, end) of an option letter in the reply, if it names one of ``n`` options."""
    m = _LETTER.match(low)
    if m and ord(m.group(1)) - ord("a") < n:
        return ord(m.group(1)) - ord("a"), m.start(1), m.end(1)
    for m in _LETTER_ANY.finditer(clean):
        k = next(g for g in (1, 2, 3) if m.group(g))
        if ord(m.group(k).lower()) - ord("a") < n:
            return ord(m.group(k).lower()) - ord("a"), m.start(k), m.end(k)
    return None


def _concessive_spans(low: str) -> list[tuple[int, int]]:
    """"Although the chair looks bigger", "while the table is wider": clauses that do not give the answer."""
    out = []
    for m in _CONCESSIVE.finditer(low):
        end = re.compile(r"[,;:!?\n]|\.(?=\s|$)|\bbut\b").search(low, m.end())
        out.append((m.start(), end.start() if end else len(low)))
    return out


def parse_choice(text: str, options: Sequence[str], question: str | None = None, *,
                 qtype: str | None = None) -> ParsedAnswer:
    """Which option a reply names (``value``: its index in ``options``; rules in the module docstring).

    ``question`` (and ``qtype``, e.g. ``"close_choice"``) give the asked relation, so that "The table is
    farther than the chair." answers "Which is closer?" with the chair.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(options, str) or len(options) == 0:
        raise ValueError("options must be a non-empty sequence of strings")
    clean = normalize_text(text)
    low = _lower(clean)
    starts = _sentence_starts(clean)
    refusals = _refusals(low)
    words = _choice_words(low)
    hits, unmatched_qual = _option_hits(words, options)
    # an option letter decides only when the reply names no option (the prompt shows no letters, and
    # "A) the blue chair" names the chair whatever the letter says)
    letter = _letter_pick(clean, low, len(options)) if not hits else None
    if letter is not None:
        return ParsedAnswer("ok", letter[0], ("letter",), clean[letter[1]:letter[2]])
    questions = [(a, b) for a, b in zip(starts, [*starts[1:], len(low)], strict=True)
                 if low[a:b].rstrip().endswith("?")]
    answer_hits = [h for h in hits if not any(a <= h.start < b for a, b in questions)]
    hits = answer_hits or hits  # a restated question ("Which is closer, A or B? B.") names both
    named = sorted({h.option for h in hits})
    if not hits:
        ordinal = _ORDINAL.search(low)
        if ordinal is not None:
            word = ordinal.group(1) or ordinal.group(2)
            k = len(options) - 1 if word in ("latter", "last") else _ORDINAL_INDEX[word]
            if k < len(options) and (not refusals or _committed(low, starts, refusals, ordinal.start())):
                return ParsedAnswer("ok", k, ("ordinal",), clean[ordinal.start():ordinal.end()])
        if refusals:
            return ParsedAnswer("refusal")
        if unmatched_qual:
            return ParsedAnswer("ambiguous", flags=("unresolved_reference",))
        return ParsedAnswer("no_answer")
    frame = _question_frame(question, qtype, options, yes_no=False) if (question or qtype) else None
    if frame is not None:
        stated = _stated_relations(clean, low, words, hits, frame)
        decisions: list[tuple[int, object]] = []
        for st in stated:
            if st.subject is None:
                continue
            if st.agrees:
                decisions.append((st.pos, st.subject))
            elif len(options) == 2:
                decisions.append((st.pos, 1 - st.subject))
            elif st.other is not None:
                decisions.append((st.pos, st.other))
        value = _agreeing(decisions, low) if decisions else _CONFLICT
        if value is not _CONFLICT:
            k = int(value)  # type: ignore[call-overload]
            pos = next(p for p, v in decisions if v == k)
            if refusals and not _committed(low, starts, refusals, pos):
                return ParsedAnswer("refusal", flags=("value_in_refusal",))
            flags = ["relation"]
            if len(named) > 1:
                flags.append("both_named")
            if k not in named:
                flags.append("by_elimination")
            if refusals:
                flags.append("hedged")
            st = next(st for st in stated if st.pos == pos)
            return ParsedAnswer("ok", k, tuple(flags), clean[st.span[0]:st.span[1]])
    concessive = _concessive_spans(low)
    main_hits = [h for h in hits if not any(a <= h.start < b for a, b in concessive)]
    if main_hits and len(main_hits) < len(hits):
        hits = main_hits  # "Although the chair looks bigger, the table is closer."
        named = sorted({h.option for h in hits})
    flags: list[str] = []
    if len(named) == 1:
        pick = hits[0]
        if all(h.negated for h in hits) and len(options) == 2:
            other = 1 - pick.option
            flags.append("by_elimination")
            pick = _Hit(other, pick.i, pick.j, pick.start, False, False)
    else:
        if refusals and any(len({h.option for h in hits if _sentence_of(starts, h.start) == _sentence_of(starts, r[0])
                                 and not (h.start > r[1] and _CONTRAST.search(low, r[1], h.start))}) > 1
                            for r in refusals):
            return ParsedAnswer("refusal", flags=("value_in_refusal", "both_named"))
        pool = hits
        both = [m for m in _BOTH.finditer(low) if not any(a <= m.start() < b for a, b in concessive)]
        if both:
            # "The chair and table are both in view, but the chair is closer.": what follows the contrast
            turn = re.compile(r"\b(?:but|however|yet|still|that said)\b").search(low, both[-1].end())
            after = [h for h in hits if turn is not None and h.start > turn.start()]
            if not after or len({h.option for h in after}) > 1:
                return ParsedAnswer("ambiguous", flags=("both_named",))
            pool = after
        flags.append("both_named")
        marker = _conclusion_after(low, [h.start for h in pool])
        if marker is not None:
            pool = [h for h in pool if h.start >= marker]
            flags.append("conclusion")
        subjects = [h for h in pool if not h.obj]
        pick = (subjects or pool)[0]
        if _verb_negated(words, pick):  # "The table is not closer; the chair is."
            alt = next((h for h in subjects if h.option != pick.option and not _verb_negated(words, h)), None)
            if alt is not None:
                pick = alt
                flags.append("negated_subject")
    if refusals:
        if not _committed(low, starts, refusals, pick.start):
            return ParsedAnswer("refusal", flags=("value_in_refusal",))
        flags.append("hedged")
    span = clean[words[pick.i].start:words[pick.j - 1].end] if "by_elimination" not in flags else ""
    return ParsedAnswer("ok", int(pick.option), tuple(flags), span)


# ----------------------------------------------------------------------------------------------- relations
#
# A *relation* is a comparison on one axis with a direction: ``h`` left (+1) / right (-1), ``v`` above /
# higher (+1) / below / lower (-1), ``d`` in front / closer (+1) / behind / farther (-1), ``t`` taller (+1) /
# shorter (-1), ``w`` wider (+1) / narrower, thinner (-1), ``s`` bigger, larger (+1) / smaller (-1).


def _phrases(text: str) -> str:
    """``"a b|c"`` -> a regex alternation of the phrases (longest first, any whitespace between words)."""
    items = [p.strip() for p in text.split("|") if p.strip()]
    return "|".join(p.replace(" ", r"\s+") for p in sorted(items, key=len, reverse=True))


# "further left", "farther to the right", "further up": an intensifier, not a depth relation
_NOT_DIRECTION = (r"(?!\s+(?:(?:to|on|toward|towards)\s+(?:the\s+)?)?"
                  r"(?:left|right|up|down|upward|downward|above|below)\b)")
_REL_PATTERNS: tuple[tuple[str, int, bool, str], ...] = (
    # (axis, sign, equality, regex)
    ("d", 1, False, _phrases("closer|closest|nearer|nearest|less distant|less far|in front|more forward|forward|"
                             "forwards|in the foreground|foreground|shorter distance|smaller distance|"
                             "lesser distance|less distance")),
    ("d", -1, False, _phrases("more distant|most distant|greater distance|larger distance|longer distance|behind|"
                              "in the background|background|further back|farther back|more backward|backward|"
                              "backwards|deeper|at the back|in the back|further away|farther away")
     + r"|(?:farther|further|farthest|furthest)" + _NOT_DIRECTION),
    ("v", 1, False, _phrases("higher|highest|higher up|atop|on top|upper|uppermost|topmost|further up|farther up|"
                             "more elevated|greater elevation|higher elevation|at a greater height|"
                             "at a higher height|at a higher level|higher level")
     + r"|(?:above|over)(?!\s*\d|\s+(?:there|here|all|time)\b)"),
    ("v", -1, False, _phrases("lower|lowest|lower down|beneath|underneath|further down|farther down|less elevated|"
                              "lower elevation|lesser elevation|at a lesser height|at a lower height|at a lower level|"
                              "bottommost|down below") + r"|(?:below|under)(?!\s*\d)"),
    ("h", 1, False, r"left(?:[\s-]*most)?(?!\s+(?:to|and|or)\s+right\b)"),
    ("h", -1, False, r"(?:(?:to|on|at|toward|towards|more|further|farther|far)\s+(?:the\s+)?(?:far\s+)?)right\b"
                     r"(?!\s+(?:to|and|or)\s+left\b)|right(?:[\s-]*hand)?\s+(?:side|of|edge)\b|right[\s-]*most"
                     r"|(?<=the )right(?!\s+(?:answer|way|now|choice|option|question|one to))\b"),
    ("t", 1, False, _phrases("taller|tallest|greater height|more height|larger height|bigger height|greater in height|"
                             "larger in height|bigger in height|larger vertical extent|greater vertical extent|"
                             "bigger vertical extent|more vertical extent|measures more from bottom to top|"
                             "more from bottom to top|spans more vertically")),
    ("t", 1, False, _phrases("more vertically|greater vertically|vertically larger|vertically bigger|"
                             "vertically longer")),
    ("t", -1, False, _phrases("less vertically|vertically smaller|vertically shorter")),
    ("t", -1, False, _phrases("shorter|shortest|less tall|lesser height|less height|smaller height|smaller in height|"
                              "less in height|lower in height|smaller vertical extent|less vertical extent|"
                              "lesser vertical extent|less from bottom to top|spans less vertically")),
    ("t", 1, True, r"as\s+tall|as\s+high\s+as"),
    ("w", 1, False, _phrases("wider|widest|broader|broadest|greater width|more width|larger width|bigger width|"
                             "greater in width|larger in width|larger horizontal dimension|"
                             "greater horizontal dimension|bigger horizontal dimension|more across|"
                             "spans more horizontally")),
    ("w", -1, False, _phrases("narrower|narrowest|thinner|thinnest|slimmer|slimmest|skinnier|less wide|lesser width|"
                              "less width|smaller width|smaller in width|less in width|smaller horizontal dimension|"
                              "less across|spans less horizontally")),
    ("w", 1, True, r"as\s+wide|as\s+broad"),
    ("s", 1, False, _phrases("bigger|biggest|larger|largest|bulkier|bulkiest|more voluminous|greater volume|"
                             "more volume|larger volume|bigger volume|greater size|larger size|bigger size|more space|"
                             "larger in size|bigger in size|greater in size")),
    ("s", -1, False, _phrases("smaller|smallest|less bulky|less voluminous|smaller volume|less volume|lesser volume|"
                              "smaller size|lesser size|less space|smaller in size")),
    ("s", 1, True, r"as\s+big|as\s+large"),
)
_REL_RX = tuple((axis, sign, eq, re.compile(rf"\b(?:{rx})")) for axis, sign, eq, rx in _REL_PATTERNS)
# "from left to right", "that's right", "right next to": not relations
_REL_MASK = re.compile(r"\bfrom (?:left to right|right to left|top to bottom|bottom to top)\b|\bleft[\s-]to[\s-]right\b"
                       r"|\b(?:left|right) (?:and|or|nor) (?:left|right)\b|\bneither left nor right\b")
# a comparative whose axis is the dimension named just before it: "A's height is not larger than B's"
_DIMENSION = re.compile(r"\b(height|width|size|volume|elevation|distance)\b")
_DIMENSION_AXIS = {"height": "t", "width": "w", "size": "s", "volume": "s", "elevation": "v", "distance": "d"}
_GENERIC_CMP = re.compile(r"\b(?:(larger|bigger|greater|exceeds?|surpass(?:es)?|higher|longer|more)|"
                          r"(smaller|less|lesser|lower|shorter|falls?\s+short))\b")
# after "the farther", "a higher" ...: the relation is stated ("the nearer one", "the taller of the two"), not
# a name's adjective ("the farther grey table", "the left chair")
_PREDICATIVE_NEXT = frozenset(_wordlist(
    "one ones of than side hand edge corner part half end among in out to from and or but is are was were be being "
    "appears appear seems seem looks look sits sit stands stand lies lie between by with at on position level "
    "elevation height width size volume object objects item thing distance"))
_NEGATION = re.compile(r"\b(?:not|never|no longer|hardly|neither|nor|no)\b(?!\s+doubt)|n't\b")
_CAMERA_WORDS = frozenset(_wordlist("camera viewer you us me photographer observer lens where spot position point "
                                    "foreground"))
_REFERENCE_STOP = frozenset(_wordlist("than and or as it its them each one other the a an this that its"))


@dataclass(frozen=True)
class _Rel:
    axis: str
    sign: int
    start: int
    end: int
    equal: bool = False  # "as tall as": equality, unless negated ("not as tall as" = shorter)


def _relations(low: str) -> list[_Rel]:
    """Every relation phrase of ``low`` (already masked where names stand), left to right, non-overlapping."""
    low = _REL_MASK.sub(lambda m: " " * len(m.group()), low)
    found: list[_Rel] = []
    for axis, sign, eq, rx in _REL_RX:
        found.extend(_Rel(axis, sign, m.start(), m.end(), eq) for m in rx.finditer(low))
    for m in _GENERIC_CMP.finditer(low):
        dims = list(_DIMENSION.finditer(low, max(0, m.start() - 60), m.start()))
        if not dims or re.search(r"[;.!?,\n]", low[dims[-1].end():m.start()]):
            continue
        dim = dims[-1].group(1)
        axis = _DIMENSION_AXIS[dim]
        sign = 1 if m.group(1) else -1
        if dim == "distance":
            sign = -sign  # a greater distance (from the camera) is farther
        found = [r for r in found if not (r.start <= m.start() < r.end and r.end - r.start <= m.end() - m.start())]
        found.append(_Rel(axis, sign, m.start(), m.end()))
    found.sort(key=lambda r: (r.start, -(r.end - r.start)))
    out: list[_Rel] = []
    for r in found:
        if out and r.start < out[-1].end:
            continue
        out.append(r)
    return [r for r in out if not _attributive(low, r)]


def _attributive(low: str, r: _Rel) -> bool:
    """Whether a relation word is a name's adjective: "the farther grey table", "a higher shelf"."""
    if not re.search(r"\b(?:the|a|an|this|that|its|their|his|her)\s+$", low[max(0, r.start - 8):r.start]):
        return False
    nxt = re.match(r"\s+([a-z]+)", low[r.end:r.end + 24])
    return nxt is not None and nxt.group(1) not in _PREDICATIVE_NEXT


_QTYPE_RELATIONS: Mapping[str, tuple[str, int]] = MappingProxyType({
    "left": ("h", 1), "right": ("h", -1), "above": ("v", 1), "higher": ("v", 1), "below": ("v", -1),
    "lower": ("v", -1), "front": ("d", 1), "close": ("d", 1), "closer": ("d", 1), "near": ("d", 1),
    "nearer": ("d", 1), "closer_to": ("d", 1), "behind": ("d", -1), "far": ("d", -1), "farther": ("d", -1),
    "farther_from": ("d", -1), "tall": ("t", 1), "taller": ("t", 1), "short": ("t", -1), "shorter": ("t", -1),
    "wide": ("w", 1), "wider": ("w", 1), "thin": ("w", -1), "narrow": ("w", -1), "big": ("s", 1),
    "bigger": ("s", 1), "large": ("s", 1), "larger": ("s", 1), "small": ("s", -1), "smaller": ("s", -1),
})


def _qtype_relation(qtype: str | None) -> tuple[str, int] | None:
    """The relation a question type asks about: ``"left_predicate"`` -> ("h", 1), ``"far_choice"`` -> ("d", -1)."""
    if not qtype:
        return None
    key = re.sub(r"_(?:predicate|choice|data)$", "", str(qtype).strip().lower())
    return _QTYPE_RELATIONS.get(key)


@dataclass(frozen=True)
class _Frame:
    """What a comparison question asks: ``axis`` / ``sign`` of the relation; for yes / no, its arguments."""

    axis: str
    sign: int
    subject: str = ""
    obj: str = ""
    reference: frozenset[str] = frozenset()  # closer to / farther from what ({"camera"} by default)


def _reference(text: str, end: int) -> frozenset[str]:
    """What a depth relation ending at ``end`` is measured from: "closer to the camera" -> {"camera"}."""
    m = re.match(r"\s+(?:to|from)\s+((?:[a-z']+\s*){1,4})", text[end:end + 60])
    if m is None:
        return frozenset()
    words = []
    for w in m.group(1).split():
        if w in ("than", "and", "or", "as", "compared", "relative", "in", "on", "at", "is", "are"):
            break
        if w not in _REFERENCE_STOP:
            words.append(singular(w))
    if any(w in _CAMERA_WORDS for w in words):
        return frozenset({"camera"})
    return frozenset(words)


def _mask(low: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(low)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    return "".join(chars)


def _hit_spans(words: list[_W], hits: Sequence[_Hit]) -> list[tuple[int, int]]:
    return [(words[h.i].start, words[h.j - 1].end) for h in hits]


def _pick_relation(rels: list[_Rel], qtype: str | None, low: str) -> _Rel | None:
    """The relation a question asks: on the question type's axis if any; a comparison ("... than", "left
    of", "compared to") before a bare one ("the mug on the left" may be a name); else the first."""
    if not rels:
        return None
    by_type = _qtype_relation(qtype)
    if by_type is not None:
        rels = [r for r in rels if r.axis == by_type[0]] or rels
    compared = [r for r in rels if re.match(r"\s+(?:of|than|compared|relative)\b", low[r.end:r.end + 12])]
    return (compared or rels)[0]


_NP_TRAILING = frozenset(_wordlist(
    "positioned located situated placed found appear appears appearing lie lies lying sit sits sitting come comes "
    "stand stands standing seem seems look looks is are be being was were more much further farther slightly "
    "somewhat a bit really actually also still so very even to on at in the of toward towards set"))
_NP_BOUNDARY = re.compile(r"\b(?:is|are|was|were|does|do|did|can|could|would|will|if|that|whether|say|confirm|think|"
                          r"tell|whose|which|of the two|between)\b|[,:]")
_NP_OBJECT_START = re.compile(r"\b(?:than|compared (?:to|with)|relative to|versus|vs\.?|as compared (?:to|with))\s+")
_NP_END = re.compile(r"[?,;:!]|\.(?:\s|$)|\s(?:from (?:the|your|where|a|my)|in (?:the|this)|as (?:seen|viewed)|"
                     r"when|is|are|does|do|horizontally|vertically|overall|physically|in terms)\b")
_NP_PREFIX = re.compile(r"^(?:(?:side|hand|-hand|of|to|from|that of|those of|the position of|the location of|the one|"
                        r"positioned|located)\s+)+")


def _noun_phrases(question: str, rel: _Rel) -> tuple[str, str]:
    """(subject, object) of a yes / no comparison question around its relation phrase (best effort)."""
    low = question
    pre = low[:rel.start].split()
    while pre and pre[-1].strip(",") in _NP_TRAILING:
        pre.pop()
    before = " ".join(pre)
    cut = list(_NP_BOUNDARY.finditer(before))
    subject = before[cut[-1].end():] if cut else before
    subject = re.sub(r"^\s*(?:the (?:position|location|height|width|size|length|volume|elevation) of|the one)\s+", "",
                     subject).strip(" ,")
    post = low[rel.end:]
    m = _NP_OBJECT_START.search(post)
    if m is not None:  # "closer to the camera compared to B", "more distant than that of B"
        post = post[m.end():]
    post = _NP_PREFIX.sub("", post.strip())
    end = _NP_END.search(post)
    obj = post[:end.start()] if end else post
    obj = _NP_PREFIX.sub("", obj.strip()).strip(" ,")
    if not obj:  # "Relative to B, is A on the left?"
        m = re.search(r"\b(?:relative to|compared (?:to|with)|than)\s+([^,?]+)", low)
        obj = m.group(1).strip() if m else ""
    return subject, obj


def _question_frame(question: str | None, qtype: str | None, names: Sequence[str], yes_no: bool) -> _Frame | None:
    """The relation (and, for yes / no, its arguments in asked order) a question asks; None if not a comparison."""
    low = _lower(normalize_text(question)) if question else ""
    words = _choice_words(low) if low else []
    hits = _option_hits(words, names)[0] if names and words else []
    masked = _mask(low, _hit_spans(words, hits))
    rels = _relations(masked) if low else []
    rel = _pick_relation(rels, qtype, masked)
    frame = _frame_of(rel, low, qtype, names, hits, yes_no)
    if frame is None or frame.axis != "d":
        return frame
    reference = (_reference(masked, rel.end) if rel is not None else frozenset()) or frozenset({"camera"})
    return _Frame(frame.axis, frame.sign, frame.subject, frame.obj, reference)


def _frame_of(rel: _Rel | None, low: str, qtype: str | None, names: Sequence[str], hits: Sequence[_Hit],
              yes_no: bool) -> _Frame | None:
    """The frame of :func:`_question_frame` from the question's relation (``None``: none found)."""
    by_type = _qtype_relation(qtype)
    if rel is None:
        if by_type is None:
            return None
        if not yes_no:
            return _Frame(*by_type)
        if len(names) >= 2:  # the type's relation holds between the roles: A (names[0]) and B
            return _Frame(*by_type, subject=names[0], obj=names[1])
        return _Frame(*by_type)
    if not yes_no:
        return _Frame(*(by_type or (rel.axis, rel.sign)))
    if by_type is not None and rel.axis != by_type[0]:
        # "Is A vertically larger than B?" (tall), "In terms of width, is A smaller than B?" (thin): the
        # type's axis, the question's direction
        rel = _Rel(by_type[0], rel.sign, rel.start, rel.end, rel.equal)
    if len(names) >= 2:
        before = [h for h in hits if h.start < rel.start]
        first = before[-1].option if before else (hits[0].option if hits else 0)
        first = first if first < 2 else 0
        return _Frame(rel.axis, rel.sign, subject=names[first], obj=names[1 - first])
    subject, obj = _noun_phrases(low, rel)
    return _Frame(rel.axis, rel.sign, subject=subject, obj=obj)


_REL_BREAK = re.compile(r"[;:!?\n]|\.(?=\s|$)|,(?!\d)|\b(?=(?:but|whereas|while|although|though|however|yet)\b)")
_CONCESSIVE = re.compile(r"\b(?:although|though|even though|while|whereas|despite|even if|albeit)\b")


def _clause_bounds(low: str) -> list[int]:
    return sorted({0, len(low), *(m.end() for m in _REL_BREAK.finditer(low))})


def _clause_of(bounds: list[int], pos: int) -> tuple[int, int]:
    k = bisect.bisect_right(bounds, pos) - 1
    return bounds[max(k, 0)], bounds[min(k + 1, len(bounds) - 1)]


@dataclass(frozen=True)
class _Stated:
    """One relation the reply states on the asked axis."""

    pos: int
    subject: int | None  # option / argument index of its subject (None: not named)
    other: int | None  # the option it is compared with, if named
    agrees: bool  # the stated relation of its subject has the asked direction
    span: tuple[int, int]


def _stated_relations(clean: str, low: str, words: list[_W], hits: Sequence[_Hit], frame: _Frame) -> list[_Stated]:
    """The relations a reply states on the asked axis with their subjects (see the module docstring, Relations)."""
    axis, sign = frame.axis, frame.sign
    spans = _hit_spans(words, hits)
    masked = _mask(low, spans)
    rels = [r for r in _relations(masked) if r.axis == axis]
    if axis == "d" and frame.reference:  # "closer to the wall" does not answer "closer to the camera"
        rels = [r for r in rels if not _reference(masked, r.end) or _reference(masked, r.end) & frame.reference]
    if not rels:
        return []
    bounds = _clause_bounds(low)
    starts = _sentence_starts(clean)
    out: list[_Stated] = []
    for r in rels:
        c0, c1 = _clause_of(bounds, r.start)
        ends = [(h, e) for h, (_, e) in zip(hits, spans, strict=True)]
        before = [(h, e) for h, e in ends if c0 <= h.start and e <= r.start]
        subj: _Hit | None = None
        subjects = [h for h, e in before if not h.obj]
        if subjects or before:  # the nearest subject before it ("Compared with B, A is closer")
            subj = (subjects or [h for h, _ in before])[-1]
        else:
            after = [h for h, _ in ends if r.end <= h.start < c1]
            subj = next((h for h in after if re.search(r"(?:\b(?:is|are|was|were)|:)\s*$", low[r.end:h.start])),
                        None)  # "Positioned to the left is Region [1]."
            if subj is None:
                # "it" (or nothing): the last subject earlier in the sentence ("the box isn't higher than
                # the mug; it's lower"), else (subject None) the question's subject
                s0 = starts[_sentence_of(starts, r.start)]
                earlier = [h for h, e in ends if s0 <= h.start and e <= c0 and not h.obj]
                subj = earlier[-1] if earlier else None
        # a negation anywhere before the relation in its clause ("I don't think the lamp is taller"), but
        # not one that negates a name ("the table and not the chair is closer")
        negated = any(not any(re.fullmatch(r"\s+(?:(?:the|a|an)\s+)?", low[n.end():h.start]) for h in hits)
                      for n in _NEGATION.finditer(low, c0, r.start))
        if r.equal and not negated:
            continue  # "as tall as": neither direction
        agrees = (r.sign == sign) != negated
        other = next((h.option for h, _ in ends if h.start >= r.end and h.start < c1
                      and (subj is None or h.option != subj.option)), None)
        out.append(_Stated(r.start, subj.option if subj is not None else None, other, agrees, (r.start, r.end)))
    return out


def _agreeing(decisions: list[tuple[int, object]], low: str) -> object:
    """The one value all decisions give; if they differ, the one those after the last concluding marker give."""
    values = {v for _, v in decisions}
    if len(values) == 1:
        return next(iter(values))
    marker = _conclusion_after(low, [p for p, _ in decisions])
    if marker is not None:
        late = {v for p, v in decisions if p >= marker}
        if len(late) == 1:
            return next(iter(late))
    return _CONFLICT


_CONFLICT = object()


# ----------------------------------------------------------------------------------------------- points

_PT_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_PT_LEN = "|".join(sorted((re.escape(u) for u in UNIT_ALIASES if u.isalpha()), key=len, reverse=True))
# a length unit after a number; "in" only when no word follows ("(1, 2, 3) in the frame" is not inches)
_PT_UNIT = rf"(?:(?!in\s+[a-z])(?:{_PT_LEN})\b\.?)"
_PT_PX = r"(?:px|pixels?)\b"
_PT_JSON = re.compile(r"[\"']?(?P<key>point_2d|point_3d|bbox_2d)[\"']?\s*:\s*\[(?P<body>[^\[\]]*)\]", re.IGNORECASE)
_PT_MOLMO = re.compile(r"<(?P<tag>points?)\b(?P<attrs>[^<>]*)>", re.IGNORECASE)
_PT_ATTR = re.compile(r"([A-Za-z]+\d*)\s*=\s*[\"']([^\"']*)[\"']")
_PT_COMPONENT = rf"(?P<{{n}}>{_PT_NUM})\s*(?P<{{u}}>{_PT_UNIT}|{_PT_PX})?"
_PT_XY = re.compile(
    r"(?<![A-Za-z0-9_])(?P<a>[xu])\s*[=:]\s*" + _PT_COMPONENT.format(n="n1", u="u1")
    + r"\s*[,;]?\s*(?:and\s+)?(?P<b>[yv])\s*[=:]\s*" + _PT_COMPONENT.format(n="n2", u="u2")
    + r"(?:\s*[,;]?\s*(?:and\s+)?z\s*[=:]\s*" + _PT_COMPONENT.format(n="n3", u="u3") + ")?",
    re.IGNORECASE)
# "in cm" names the unit of a whole tuple, after it ("(118, 413, 85) in cm") or before it ("in cm: (118, ...)")
_PT_IN = rf"(?<![A-Za-z])in\s+(?=(?:{_PT_LEN})\b)"
_PT_TUPLE = re.compile(
    rf"(?:{_PT_IN}(?P<pre>(?:{_PT_LEN})\b)\.?\s*[:,]?\s*)?"
    r"[(\[]\s*" + _PT_COMPONENT.format(n="n1", u="u1") + r"\s*,\s*" + _PT_COMPONENT.format(n="n2", u="u2")
    + r"\s*(?:,\s*" + _PT_COMPONENT.format(n="n3", u="u3") + r"\s*)?[)\]]"
    + rf"(?:\s*(?:{_PT_IN})?(?P<unit>{_PT_UNIT}|{_PT_PX}))?", re.IGNORECASE)
_PT_BARE = re.compile(
    rf"\b(?:pixels?|px|coordinates?|point)\s*(?:at\s*)?:?\s*(?P<n1>{_PT_NUM})\s*,\s*(?P<n2>{_PT_NUM})(?!\.?\d)"
    rf"(?!\s*(?:,\s*{_PT_NUM}|{_PT_UNIT}))", re.IGNORECASE)
_SAME_PIXEL = 1.0  # pixels
_SAME_POINT = 0.001  # metres


@dataclass
class _Pt:
    kind: str  # "pixel" or "point_3d"
    value: tuple[float, ...]
    start: int
    end: int
    flags: tuple[str, ...] = ()


def _is_px(unit: str | None) -> bool:
    return bool(unit) and unit.lower().startswith(("px", "pixel"))


def _metres(values: Sequence[str], units: Sequence[str | None], shared: str | None) -> tuple[tuple[float, ...], bool]:
    """Components in metres (each its own unit, else the shared one, else metres) and whether a unit was given."""
    out, given = [], False
    for v, u in zip(values, units, strict=True):
        unit = u or shared
        given = given or bool(unit)
        out.append(to_metres(float(v), unit.rstrip(".")) if unit else float(v))
    return tuple(out), given


def _point_candidates(clean: str, image_size: tuple[float, float] | None) -> tuple[list[_Pt], set[str]]:
    """Every image point and 3D point the text states (spans of earlier patterns are not read again)."""
    work = clean
    found: list[_Pt] = []
    notes: set[str] = set()

    def consume(m: re.Match[str]) -> None:
        nonlocal work
        work = work[:m.start()] + " " * (m.end() - m.start()) + work[m.end():]

    for m in list(_PT_JSON.finditer(work)):
        nums = [float(x) for x in re.findall(_PT_NUM, m.group("body"))]
        key = m.group("key").lower()
        if key == "point_2d" and len(nums) == 2:
            found.append(_Pt("pixel", (nums[0], nums[1]), m.start(), m.end(), ("json",)))
        elif key == "point_3d" and len(nums) == 3:
            found.append(_Pt("point_3d", tuple(nums), m.start(), m.end(), ("json",)))
        elif key == "bbox_2d" and len(nums) == 4:
            found.append(_Pt("pixel", ((nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2), m.start(), m.end(),
                             ("json", "box")))
        else:
            continue
        consume(m)
    for m in list(_PT_MOLMO.finditer(work)):
        attrs = {k.lower(): v for k, v in _PT_ATTR.findall(m.group("attrs"))}
        pairs = [(attrs.get("x"), attrs.get("y"))] if m.group("tag").lower() == "point" else \
            [(attrs.get(f"x{i}"), attrs.get(f"y{i}")) for i in range(1, 100) if f"x{i}" in attrs]
        pts = []
        for x, y in pairs:
            try:
                pts.append((float(x), float(y)))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
        if not pts:
            continue
        consume(m)
        if image_size is None:
            notes.add("no_image_size")
            continue
        w, h = image_size
        found += [_Pt("pixel", (x / 100.0 * w, y / 100.0 * h), m.start(), m.end(), ("percent",)) for x, y in pts]
    for m in list(_PT_XY.finditer(work)):
        if (m.group("a").lower() == "u") != (m.group("b").lower() == "v"):
            continue  # "x=.., v=.." mixes two conventions
        if m.group("n3") is not None:
            if m.group("a").lower() != "x" or any(_is_px(m.group(u)) for u in ("u1", "u2", "u3")):
                continue
            units = [m.group(u) for u in ("u1", "u2", "u3")]
            value, given = _metres([m.group("n1"), m.group("n2"), m.group("n3")], units, None)
            found.append(_Pt("point_3d", value, m.start(), m.end(), () if given else ("unit_assumed",)))
        elif any(m.group(u) and not _is_px(m.group(u)) for u in ("u1", "u2")):
            continue  # lengths: not an image point
        else:
            found.append(_Pt("pixel", (float(m.group("n1")), float(m.group("n2"))), m.start(), m.end()))
        consume(m)
    for m in list(_PT_TUPLE.finditer(work)):
        shared = m.group("unit") or m.group("pre")
        inner = [m.group(u) for u in ("u1", "u2", "u3")]
        if m.group("n3") is not None:
            if _is_px(shared) or any(_is_px(u) for u in inner):
                continue
            value, given = _metres([m.group("n1"), m.group("n2"), m.group("n3")], inner, shared)
            found.append(_Pt("point_3d", value, m.start(), m.end(), () if given else ("unit_assumed",)))
        elif any(u and not _is_px(u) for u in (shared, *inner[:2])):
            continue  # "(0.4, 1.1) m": a 2D length, not an image point
        else:
            u, v = float(m.group("n1")), float(m.group("n2"))
            fraction = (0 <= u <= 1 and 0 <= v <= 1 and "." in m.group("n1") + m.group("n2")
                        and not any(_is_px(x) for x in (shared, *inner[:2])))
            if fraction:
                if image_size is None:
                    notes.add("no_image_size")
                    consume(m)
                    continue
                found.append(_Pt("pixel", (u * image_size[0], v * image_size[1]), m.start(), m.end(), ("normalized",)))
            else:
                found.append(_Pt("pixel", (u, v), m.start(), m.end()))
        consume(m)
    for m in _PT_BARE.finditer(work):
        found.append(_Pt("pixel", (float(m.group("n1")), float(m.group("n2"))), m.start(), m.end()))
    found.sort(key=lambda p: p.start)
    return found, notes


def _distinct(values: Sequence[tuple[float, ...]], tol: float) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = []
    for v in values:
        if not any(max(abs(a - b) for a, b in zip(v, o, strict=True)) <= tol for o in out):
            out.append(v)
    return out


def parse_point(text: str, image_size: Sequence[float] | None = None, question: str | None = None) -> ParsedAnswer:
    """The image point (pixel) and / or 3D point (metres) a reply states (rules in the module docstring).

    ``image_size``: the image's ``(width, height)`` in pixels, needed for Molmo's percent coordinates
    and for fractions of the image size. ``question`` is accepted for symmetry with the other readers.
    Returns ``value = {"pixel": [u, v] or None, "point_3d": [x, y, z] or None}`` when answered.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    size = None
    if image_size is not None:
        w, h = (float(x) for x in image_size)
        if not (w > 0 and h > 0):
            raise ValueError(f"image_size must be (width, height) > 0, got {tuple(image_size)!r}")
        size = (w, h)
    clean = unicodedata.normalize("NFKC", strip_reasoning(text).translate(_CHAR_MAP)).translate(_CHAR_MAP)
    low = _lower(clean)
    cands, notes = _point_candidates(clean, size)
    refusals = _refusals(low)
    starts = _sentence_starts(clean)
    kept = [c for c in cands if _committed(low, starts, refusals, c.start)]
    flags = sorted(notes)
    if not kept:
        if refusals:
            return ParsedAnswer("refusal", flags=tuple(flags + (["value_in_refusal"] if cands else [])))
        return ParsedAnswer("no_answer", flags=tuple(flags))
    span = clean[kept[0].start:kept[-1].end]
    pixels = _distinct([c.value for c in kept if c.kind == "pixel"], _SAME_PIXEL)
    points = _distinct([c.value for c in kept if c.kind == "point_3d"], _SAME_POINT)
    flags += [f for c in kept for f in c.flags if f not in flags]
    if refusals:
        flags.append("hedged")
    if len(pixels) > 1 or len(points) > 1:
        return ParsedAnswer("ambiguous", flags=tuple(dict.fromkeys([*flags, "multiple"])), span=span)
    value = {"pixel": list(pixels[0]) if pixels else None, "point_3d": list(points[0]) if points else None}
    return ParsedAnswer("ok", value, tuple(dict.fromkeys(flags)), span)


# ----------------------------------------------------------------------------------------------- dispatch


def parse_answer(text: str, kind: str, unit: str, options: Sequence[str] = (), *, question: str | None = None,
                 qtype: str | None = None, subjects: Sequence[str] = (),
                 image_size: Sequence[float] | None = None) -> ParsedAnswer:
    """Read a reply to a question of ``kind`` (``quantitative`` / ``yes_no`` / ``choice`` / ``point``) and ``unit``.

    ``question`` (its text), ``qtype`` (its type, e.g. ``"left_predicate"``, ``"close_choice"``) and
    ``subjects`` (the names of the compared objects in role order, for yes / no) are optional: with
    them, a reply that states a relation instead of yes / no or an option name is compared with the
    asked relation, and of several lengths the one of the question's subject is preferred.
    ``image_size`` (width, height): for points given in percent or fractions of the image (:func:`parse_point`).

    A reasoning model's ``<think>...</think>`` block (the layout ``--with-reasoning`` trains) is not part of
    the answer: only the text after it is read, so the intermediate measurements of the chain never count
    as the answer. A reply that opens a ``<think>`` block and never closes it has no answer.
    """
    text = strip_reasoning(text)
    if kind == "quantitative":
        return parse_quantity(text, unit, question)
    if kind == "yes_no":
        return parse_yes_no(text, question, qtype=qtype, subjects=subjects)
    if kind == "choice":
        return parse_choice(text, options, question, qtype=qtype)
    if kind == "point":
        return parse_point(text, image_size, question)
    raise ValueError(f"kind must be 'quantitative', 'yes_no', 'choice' or 'point', got {kind!r}")


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """``text`` without its ``<think>...</think>`` blocks; an unclosed ``<think>`` drops the rest (no answer yet)."""
    if not isinstance(text, str) or "<think>" not in text.lower():
        return text
    out = _THINK.sub(" ", text)
    cut = out.lower().find("<think>")
    return (out if cut < 0 else out[:cut]).strip()


def item_subjects(item: Any) -> tuple[str, ...]:
    """The names of a benchmark item's compared objects in role order (A, B), where its ``meta`` holds them.

    spatialforge items store ``names`` and ``roles``; other benchmarks name the objects in the question
    only, and then ``()`` is returned (the question's own wording is read instead).
    """
    meta = getattr(item, "meta", None) or {}
    names, roles = meta.get("names") or (), meta.get("roles") or ()
    if len(names) != len(roles):
        return ()
    by_role = {str(r): str(n) for n, r in zip(names, roles, strict=True)}
    return tuple(by_role[r] for r in ("A", "B") if r in by_role)
