"""Answer understanding: what a free-text model reply states (torch-free; stdlib only).

Three readers, each returning a :class:`~spatialforge.eval.types.ParsedAnswer`, and a dispatcher:

* :func:`parse_quantity` — a length (``unit="m"``, or any unit of :data:`LENGTH_UNITS`: the value is
  given in that unit), a ratio (``"ratio"``) or a clock hour (``"clock"``);
* :func:`parse_yes_no` — a bool;
* :func:`parse_choice` — the index of the option the reply names;
* :func:`parse_answer` — dispatch on a question's ``kind`` / ``unit``.

Text is normalised first: Unicode NFKC (full-width digits, ``㎝``), typographic quotes and primes
(``2′6″``), dashes, vulgar fractions (``1½``), Markdown emphasis / code, LaTeX ``\\text{}`` and
simple HTML tags are reduced to plain ASCII-like text; matching ignores case.

Rules for the ambiguous cases (all tested in ``tests/eval/test_answers.py`` and its golden set):

Quantities
    * A *mention* is a number (digits with ``,`` / space thousands or a decimal comma, fractions,
      words: "one and a half", "a dozen", "half a", "a couple of") with a unit ("1.5m", "3 ft 2 in",
      ``2'6"``, "a metre and a half"), a range ("between 2 and 3 m", "2-3 m", "2 to 3 metres",
      "2 or 3 metres": status ``range``, value = midpoint, flag ``range``) or, for a length, a bare
      number ("about 2": metres, flag ``unit_assumed``). A bare number only counts when it ends a
      clause ("the answer is 2.") or follows a hedge / bound ("about 2 from"), so "the 2 chairs" and
      "3D" never do; numbers with other units (degrees, %, m², m/s, pixels) never do.
    * Several different mentions: the reply's *answer* is the first mention after the last
      concluding marker that is followed by a mention in the same clause ("so", "therefore",
      "thus", "hence", "the answer is", "answer:", "in total", "=" ...; chain-of-thought replies
      end this way); without one, the first mention (direct replies state the answer first and
      elaborate after: "The chair is 0.8 m from the table, which is 2 m wide" -> 0.8 m).
      Flag ``multiple`` (and ``conclusion`` when a marker decided). A mention in parentheses right
      after another ("1.5 m (5 ft)") or joined by "or" / "/" / "i.e." with a value within 20 % is
      the same answer in other units and is dropped. Units with a number count before bare numbers.
    * Hedges ("about", "roughly", "~", "≈", "a bit over", "just under", "or so") -> flag ``approx``;
      bounds ("less than 1 metre", "under", "over", "at least", "up to", "<", "or more") -> the
      bound itself as the value, flag ``bound``; a sign ("-0.3 m", "minus") is kept, flag ``negative``.
    * Ratios: "1.5 times", "1.5x", "twice" (2), "thrice", "double", "half as tall" (0.5),
      "50% taller" (1.5), "20% shorter" (0.8), "3:2" (1.5), "N times shorter/smaller" (1/N, flag
      ``inverse``), "the same height" (1, flag ``implicit``); lengths are ignored.
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
    ``implicit``; any other statement -> ``no_answer`` (the question is not known here, so "The mug
    is to the right of the plate" cannot be judged).

Choice
    An option is *named* by its full words (articles and plural -s ignored, "leftmost" ~ "on the
    left" ~ "left"), else by its core before a preposition if unique ("the blue mug" for "the blue
    mug on the left"), else by a distinctive word (a word of only one option; colours and nouns
    before spatial words). A reply starting with a letter ("B", "(b)", "Option B") picks by letter.
    Mentions inside a restated question ("Which is closer, A or B? B.") are ignored when the rest
    names an option. Exactly one option named -> it. Several named -> ``ambiguous`` if the reply
    says "both", "either", "neither", "equally" or "the same"; otherwise the first *subject* mention
    after the last concluding marker ("The table is farther, so the chair is closer" -> the chair),
    else the first subject mention, else the first mention. Flag ``both_named``. A mention right
    after a preposition, "than", "as", "not", "comparing" (or coordinated with such a mention:
    "between the table and the chair, ...") is an object, not a subject ("Compared with the table,
    the chair is closer" -> the chair; "It's not the chair, it's the table" -> the table). A subject
    whose verb is negated yields to a later un-negated subject ("The table is not closer; the chair
    is." -> the chair, flag ``negated_subject``). So "The chair is taller than the table" -> the
    chair and "The table is shorter than the chair" -> the table: the question's polarity is not
    known here, the subject of the first clause is taken as the answer. With two options, naming
    only one, after "not", picks the other (flag ``by_elimination``). No option named ->
    ``ambiguous`` if the reply uses a spatial reference that no option contains ("the leftmost
    one" for "the chair" / "the table"), else ``no_answer``.

Refusals
    "I cannot determine", "impossible to tell", "I don't know", "I'm not sure", "sorry", "hard to
    say", "not enough information" ... -> ``refusal``, unless the reply still commits to a value:
    one in another sentence, before the refusal in its sentence ("About 2 m, though I can't be
    sure"), or after a contrast ("..., but it looks like 2 m"): then the value with flag ``hedged``.
    A leading "No" in the refusal's sentence ("No, I can't tell") is a refusal, as is a choice
    reply naming several options in the refusal's sentence ("I can't tell whether A or B"); such
    refusals carry the flag ``value_in_refusal``.

Flags
    ``approx``, ``bound``, ``negative``, ``range``, ``unit_assumed``, ``inverse`` (what a number
    says); ``multiple``, ``conclusion``, ``both_named``, ``negated_subject``, ``by_elimination``,
    ``letter`` (how it was chosen); ``implicit`` (no explicit yes / no / number); ``hedged`` (a value
    despite a refusal phrase); ``both`` (yes and no); ``unresolved_reference``; ``value_in_refusal``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from spatialforge.eval.types import ParsedAnswer
from spatialforge.qa.refer import singular

__all__ = [
    "LENGTH_UNITS",
    "UNIT_ALIASES",
    "normalize_text",
    "parse_answer",
    "parse_choice",
    "parse_quantity",
    "parse_yes_no",
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


def _quantity_result(low: str, clean: str, cands: list[_Mention], flags_extra: tuple[str, ...]) -> ParsedAnswer:
    starts = _sentence_starts(clean)
    refusals = _refusals(low)
    if not cands:
        return ParsedAnswer("refusal") if refusals else ParsedAnswer("no_answer")
    flags: list[str] = list(flags_extra)
    chosen = cands[0]
    if len({round(c.value, 9) for c in cands}) > 1:
        flags.append("multiple")
        marker = _conclusion_after(low, [c.start for c in cands])
        if marker is not None:
            chosen = next(c for c in cands if c.start >= marker)
            flags.append("conclusion")
    if refusals:
        if not _committed(low, starts, refusals, chosen.start):
            return ParsedAnswer("refusal", flags=("value_in_refusal",))
        flags.append("hedged")
    flags = [*chosen.flags, *flags]
    return ParsedAnswer("range" if chosen.lo != chosen.hi else "ok", chosen.value,
                        tuple(dict.fromkeys(flags)), clean[chosen.start:chosen.end])


def parse_quantity(text: str, unit: str = "m") -> ParsedAnswer:
    """The length / ratio / clock hour a reply states (rules in the module docstring).

    ``unit``: ``"m"`` (value in metres) or another unit of :data:`LENGTH_UNITS` (value in that unit),
    ``"ratio"`` (a pure number) or ``"clock"`` (an hour 1-12, ``int``; a range's midpoint is a float).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if unit not in ("ratio", "clock") and unit not in LENGTH_UNITS:
        raise ValueError(f"unit must be 'ratio', 'clock' or a length unit {tuple(LENGTH_UNITS)}, got {unit!r}")
    clean = normalize_text(text)
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
    res = _quantity_result(low, clean, cands, extra)
    if res.answered and per != 1.0 and res.value is not None:
        return ParsedAnswer(res.status, float(res.value) / per, res.flags, res.span)
    return res


# ----------------------------------------------------------------------------------------------- yes / no

_NO_LEAD = re.compile(
    r"(?:absolutely|certainly|definitely|of course|surely) not|not (?:at all|really|quite|exactly|correct|true|right|"
    r"so|the case)|(?:that'?s|that is|this is|it'?s|it is|you'?re|you are) (?:not (?:correct|right|true|the case)|"
    r"incorrect|wrong|false|untrue|mistaken)|i (?:don'?t|do not) (?:think|believe) so|by no means|no way|"
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
    r"\b(?:answer(?: is)?|i(?:'d| would) say|so|therefore|thus|hence)\s*[:,]?\s*[\"']?(yes|no)(?![a-z'])")


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


def parse_yes_no(text: str) -> ParsedAnswer:
    """The yes / no a reply states (``value``: bool; rules in the module docstring)."""
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
        decisive.append((m.start(1), m.group(1) == "yes", m.end(1)))
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
    if refusals:
        return ParsedAnswer("refusal")
    short = re.fullmatch(r"\W*(?:it|they|that|this|he|she|there|which)\s+(?:is|are|does|do|was|were|has|have|can|"
                         r"will|did)(?:\s+(?:indeed|so|true|correct|the case))?\W*", low)
    if short:
        return ParsedAnswer("ok", True, ("implicit",), clean)
    first = low[:starts[1]] if len(starts) > 1 else low
    neg = re.search(r"\b(?:not|never|neither|nor|no longer)\b|n't\b", first)
    if neg:
        return ParsedAnswer("ok", False, ("implicit",), clean[neg.start():neg.end()])
    return ParsedAnswer("no_answer")


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
_LETTER = re.compile(r"\W*(?:(?:option|answer|choice)\s*:?\s*)?\(?([a-h])\)?(?:[.:)]|\s*$)")


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


def parse_choice(text: str, options: Sequence[str]) -> ParsedAnswer:
    """Which option a reply names (``value``: its index in ``options``; rules in the module docstring)."""
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
    letter = _LETTER.match(low)
    # an option letter decides only when the reply names no option (the prompt shows no letters, and
    # "A) the blue chair" names the chair whatever the letter says)
    if letter and ord(letter.group(1)) - ord("a") < len(options) and not hits:
        return ParsedAnswer("ok", ord(letter.group(1)) - ord("a"), ("letter",), clean[letter.start(1):letter.end(1)])
    questions = [(a, b) for a, b in zip(starts, [*starts[1:], len(low)], strict=True)
                 if low[a:b].rstrip().endswith("?")]
    answer_hits = [h for h in hits if not any(a <= h.start < b for a, b in questions)]
    hits = answer_hits or hits  # a restated question ("Which is closer, A or B? B.") names both
    named = sorted({h.option for h in hits})
    if not hits:
        if refusals:
            return ParsedAnswer("refusal")
        if unmatched_qual:
            return ParsedAnswer("ambiguous", flags=("unresolved_reference",))
        return ParsedAnswer("no_answer")
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
        if _BOTH.search(low):
            return ParsedAnswer("ambiguous", flags=("both_named",))
        flags.append("both_named")
        pool = hits
        marker = _conclusion_after(low, [h.start for h in hits])
        if marker is not None:
            pool = [h for h in hits if h.start >= marker]
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


# ----------------------------------------------------------------------------------------------- dispatch


def parse_answer(text: str, kind: str, unit: str, options: Sequence[str] = ()) -> ParsedAnswer:
    """Read a reply to a question of ``kind`` (``quantitative`` / ``yes_no`` / ``choice``) and ``unit``."""
    if kind == "quantitative":
        return parse_quantity(text, unit)
    if kind == "yes_no":
        return parse_yes_no(text)
    if kind == "choice":
        return parse_choice(text, options)
    raise ValueError(f"kind must be 'quantitative', 'yes_no' or 'choice', got {kind!r}")
