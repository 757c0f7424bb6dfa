"""Parse fill-in-the-blank (FITB) answers into their five slots.

The labels come from the dataset's prompt (``[Dish Type], [Cuisine], …``). Real answers
take many shapes (all seen in the authors' released files):

- ``[Dish Type] {Pasta} [Cuisine] {Italian} …``                 strict format
- ``['[Dish Type] {Dip} …']``                                    wrapped in a Python list repr
- ``Pecan Pie {Pie} {American} {Pecans} {Sweet} {Dessert}``       braces without labels
- ``[Fried Shrimp] {American} [Primary Ingredient] {Shrimp} …``   first labels replaced by values
- ``Dish Type {Pasta} Cuisine {Italian} …``                       bare labels
- ``[Dish Type] Deviled Egg [Cuisine] American …``               labels, no braces
- ``Category: X, Age Group: Y`` on one or several lines, markdown bullets, ``**bold**``
- ``{Chocolate]`` / ``{Breakfast`` (mismatched or missing closer), trailing periods
- ``{Spicy, Sweet}``, ``{Lunch/Dinner}``, ``Snack or Dessert`` (alternatives: first kept)
- ``{None}`` for every slot followed by a note, and plain refusals.

Algorithm: normalise the text, turn it into a token stream of LABEL(i) and VALUE(text,
delimited?) tokens, then walk it with a cursor: a label moves the cursor to its slot, a
value fills the cursor's slot and advances it. When a stretch between labels holds more
values than it has free slots, undelimited free text (a dish title such as ``Pecan Pie``
before ``{Pie} {American} …``) is dropped first — the delimited values are the answer.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import pandas as pd

# Row statuses, from best to worst.
STATUS_STRICT = "strict"  # all five slots, exact bracket format
STATUS_REPAIRED = "repaired"  # all five slots, recovered from another shape
STATUS_PARTIAL = "partial"  # some slots
STATUS_REFUSAL = "refusal"  # the model declined / said there is nothing to describe
STATUS_EMPTY = "empty"  # nothing in the answer
STATUS_UNPARSED = "unparsed"  # text, but no slot recovered
COMPLETE = (STATUS_STRICT, STATUS_REPAIRED)

MAX_VALUE_CHARS = 60  # a longer "value" is prose, not a keyword
MAX_VALUE_WORDS = 8
MAX_INPUT_CHARS = 20_000  # answers longer than this are truncated before parsing

_NULL_VALUES = {
    "", "none", "n/a", "na", "null", "unknown", "not applicable", "not visible", "not specified",
    "not available", "not clear", "unclear", "-", "--", "...", "…", "nil", "no", "nan",
}
_REFUSAL = re.compile(
    r"\b(sorry|i cannot|i can't|i can not|unable to|i am not able|i'm not able|as an ai|"
    r"cannot (?:provide|assist|determine|identify)|no (?:visible )?(?:dish|food|product|item)s?\b|"
    r"does not (?:contain|show|depict))",
    re.IGNORECASE,
)


class ParseError(ValueError):
    pass


def require_prompt(prompt: str | None) -> str:
    """The one check for an empty ``lvlm.prompt`` (running a model and parsing answers both need it)."""
    if not prompt or not str(prompt).strip():
        raise ParseError("lvlm.prompt is empty: set it to the dataset's FITB prompt (running an LVLM and "
                         "parsing FITB answers both need it)")
    return prompt


def labels_from_prompt(prompt: str, n: int = 5) -> list[str]:
    """The slot labels of a FITB prompt: the first ``n`` distinct ``[Label]`` names, in order."""
    require_prompt(prompt)
    seen: list[str] = []
    for m in re.finditer(r"\[([^\[\]]+)\]", prompt):
        name = m.group(1).strip()
        if name and name not in seen:
            seen.append(name)
    if len(seen) < n:
        raise ParseError(f"the prompt names {len(seen)} [Label]s ({seen}); a FITB prompt needs {n}")
    return seen[:n]


@dataclass
class ParsedAnswer:
    values: list[str | None]
    status: str
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status in COMPLETE


class FitbParser:
    """Parser for one prompt's labels; ``parse(text)`` → :class:`ParsedAnswer`."""

    def __init__(self, labels: list[str]):
        if len(labels) != 5 or len(set(l.lower() for l in labels)) != 5:
            raise ParseError(f"need five distinct labels, got {labels}")
        self.labels = list(labels)
        alts = []
        for i, lab in enumerate(labels):
            words = r"\s*".join(re.escape(w) for w in lab.split())  # "MealType" too
            alts.append(f"(?P<L{i}>{words})")
        any_label = "|".join(alts)
        # A label is recognised when bracketed ([Cuisine]) anywhere, or bare (Cuisine) when it
        # starts a stretch and is followed by ':' / '{' / '[' / '=' / '-' or a line end.
        self._label_re = re.compile(
            rf"\[\s*(?:{any_label})\s*\]\s*:?"
            rf"|\{{\s*(?:{any_label.replace('?P<L', '?P<D')})\s*\}}\s*:?"
            rf"|(?:^|(?<=[\s,;.\]}}>|]))(?:{any_label.replace('?P<L', '?P<B')})\s*(?::|=|-(?=\s)|(?=\s*[{{\[])|(?=\s*$))",
            re.IGNORECASE | re.MULTILINE,
        )
        # "Cornbread {Dish Type} …": the value written before its own label in braces.
        self._value_then_braced_label = re.compile(
            rf"^([^\[\]{{}}\n]+?)\s*\{{\s*(?:{any_label.replace('?P<L', '?P<C')})\s*\}}",
            re.IGNORECASE,
        )
        self._strict = re.compile(
            r"^\s*"
            + r"[\s,;.]*".join(
                rf"\[{re.escape(lab)}\]\s*\{{[^{{}}\[\]\n]*\}}" for lab in labels
            )
            + r"[\s,;.]*$"
        )

    # ---- normalisation -------------------------------------------------------------
    @staticmethod
    def _unwrap(text: str) -> tuple[str, list[str]]:
        notes = []
        t = text.strip()
        # ['…'] / ["…"]: the generation was saved as a Python list of strings.
        if len(t) >= 4 and t[0] == "[" and t[1] in "'\"" and t[-1] == "]":
            try:
                obj = ast.literal_eval(t)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                obj = None
            if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
                t = "\n".join(obj).strip()
                notes.append("list_repr")
        return t, notes

    def _normalise(self, text: str) -> tuple[str, list[str]]:
        t, notes = self._unwrap(text)
        if len(t) > MAX_INPUT_CHARS:
            t = t[:MAX_INPUT_CHARS]
            notes.append("truncated")
        t = t.replace("\r\n", "\n").replace("\u00a0", " ")
        t = re.sub(r"[`*_#]{1,3}(?=\S)|(?<=\S)[`*_#]{1,3}", "", t)  # markdown emphasis, headings
        t = re.sub(r"^\s*(?:[-•·>]|\d+[.)])\s+", "", t, flags=re.MULTILINE)  # bullets, numbering
        t = re.sub(r"[“”]", '"', t)
        t = re.sub(r"\[\s*['\"]([^'\"\[\]{}]+)['\"]\s*\]", r"[\1]", t)  # ['Dish Type'] → [Dish Type]
        # Mismatched closers: {Chocolate] → {Chocolate}; a brace left open at a line end.
        t2 = re.sub(r"\{([^{}\[\]\n]*)\]", r"{\1}", t)
        t2 = re.sub(r"\{([^{}\[\]\n]*)$", r"{\1}", t2, flags=re.MULTILINE)
        if t2 != t:
            notes.append("fixed_brackets")
            t = t2
        m = self._value_then_braced_label.match(t)
        if m:
            slot = next(int(k[1:]) for k, v in m.groupdict().items() if v)
            t = f"[{self.labels[slot]}] {{{m.group(1).strip()}}}" + t[m.end():]
            notes.append("value_before_label")
        return t, notes

    # ---- tokens --------------------------------------------------------------------
    def _tokens(self, t: str) -> list[tuple[str, object, bool]]:
        """[('label', slot, _) | ('value', text, delimited)] in text order."""
        tokens: list[tuple[str, object, bool]] = []
        pos = 0
        for m in self._label_re.finditer(t):
            tokens.extend(self._values(t[pos:m.start()]))
            slot = next(int(k[1:]) for k, v in m.groupdict().items() if v is not None)
            tokens.append(("label", slot, True))
            pos = m.end()
        tokens.extend(self._values(t[pos:]))
        return tokens

    @staticmethod
    def _values(stretch: str) -> list[tuple[str, object, bool]]:
        out = []
        for m in re.finditer(r"\{([^{}]*)\}|\[([^\[\]]*)\]|([^{}\[\]]+)", stretch):
            if m.group(3) is not None:
                txt = m.group(3).strip(" \t\n,;.:|-")
                if txt:
                    out.append(("value", txt, False))
            else:
                txt = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
                out.append(("value", txt, True))
        return out

    # ---- values --------------------------------------------------------------------
    @staticmethod
    def clean_value(raw: str) -> str | None:
        v = raw.strip()
        # Stop at a blank line / line break: what follows is a note, not the value.
        v = v.split("\n")[0]
        v = re.sub(r"\([^()]*\)", " ", v)  # "(not visible)", "(optional)"
        v = v.strip(" \t\"'`.,;:!|-")
        if v.lower() in _NULL_VALUES:
            return None
        # Alternatives: keep the first of a/b, a, b, a; b, a | b, a or b.
        v = re.split(r"\s*/\s*|\s*,\s*|\s*;\s*|\s*\|\s*|\s+or\s+", v, maxsplit=1, flags=re.IGNORECASE)[0]
        v = re.sub(r"\s+", " ", v).strip(" \t\"'`.,;:!|-{}[]")
        if v.lower() in _NULL_VALUES:
            return None
        if len(v) > MAX_VALUE_CHARS or len(v.split()) > MAX_VALUE_WORDS:
            return None
        return v

    # ---- the parser ----------------------------------------------------------------
    def parse(self, text: object) -> ParsedAnswer:
        if text is None or (isinstance(text, float) and text != text):
            return ParsedAnswer([None] * 5, STATUS_EMPTY, "missing answer")
        text = str(text)
        if not text.strip():
            return ParsedAnswer([None] * 5, STATUS_EMPTY, "empty answer")
        # Strict = the model's own text (a list repr is how the answer was saved, not what the
        # model wrote) matches the bracket format exactly.
        strict = bool(self._strict.match(self._unwrap(text)[0][:MAX_INPUT_CHARS]))
        t, notes = self._normalise(text)
        tokens = self._tokens(t)
        values: list[str | None] = [None] * 5
        raw: list[str | None] = [None] * 5
        # Split into stretches: each starts at a label (or the text start) and holds values.
        stretches: list[tuple[int | None, list[tuple[str, bool]]]] = [(None, [])]
        for kind, a, delim in tokens:
            if kind == "label":
                stretches.append((int(a), []))  # type: ignore[arg-type]
            else:
                stretches[-1][1].append((str(a), delim))
        labelled = [s for s, _ in stretches if s is not None]
        n_labels = len(set(labelled))
        if not n_labels and len(stretches[0][1]) == 1 and not stretches[0][1][0][1]:
            # "Pasta Salad, Italian, Mozzarella, Savory, Lunch": five bare values in order.
            parts = [x.strip(" .") for x in re.split(r"[,;\n]+", stretches[0][1][0][0]) if x.strip(" .")]
            if len(parts) == 5:
                stretches = [(None, [(x, True) for x in parts])]
                notes.append("positional_list")
        pending: list[tuple[str, bool]] = []
        seen_labels: set[int] = set()
        for k, (start, vals) in enumerate(stretches):
            cursor = 0 if start is None else start
            nxt = next((s for s, _ in stretches[k + 1:] if s is not None and s > cursor), 5)
            if start is None and n_labels:
                nxt = min(labelled)  # before the first label: only the slots before it
            open_slots = [i for i in range(cursor, nxt) if raw[i] is None]
            if start is not None:
                if start in seen_labels:
                    # A repeated label keeps its own slot (first value wins): its value must not
                    # flow into the next free slot ("[Category] {Mug}, [Category] {Mug}" → no Color).
                    if vals:
                        notes.append("repeated_label")
                    open_slots = [start] if raw[start] is None else []
                seen_labels.add(start)
            if start is not None and not vals and pending and raw[start] is None:
                # "French toast [Dish Type] [Cuisine] [French] …": the value came before its label.
                vals = pending[-1:]
                notes.append("value_before_label")
            pending = vals if start is None and not open_slots else []
            if not vals or not open_slots:
                continue
            free = len(open_slots)
            if len(vals) > free:
                delimited = [v for v in vals if v[1]]
                vals = delimited if len(delimited) >= free else vals
                if len(vals) > free:
                    notes.append("extra_values")
                vals = vals[:free]
            for slot, (v, _) in zip(open_slots, vals):
                raw[slot] = v
                values[slot] = self.clean_value(v)
        filled = sum(v is not None for v in values)
        if filled == 5:
            return ParsedAnswer(values, STATUS_STRICT if strict else STATUS_REPAIRED, "", notes)
        missing = [self.labels[i] for i in range(5) if values[i] is None]
        nulls = [self.labels[i] for i in range(5) if values[i] is None and raw[i] is not None]
        if _REFUSAL.search(t) or (nulls and all(
            raw[i] is not None and raw[i].strip().lower() in _NULL_VALUES for i in range(5) if values[i] is None
        ) and filled == 0):
            # A refusal's words are not keywords: no slot keeps a value.
            return ParsedAnswer([None] * 5, STATUS_REFUSAL, f"refusal or no content; missing {missing}", notes)
        if filled == 0:
            return ParsedAnswer(values, STATUS_UNPARSED, "no slot recognised", notes)
        why = []
        if nulls:
            why.append(f"null/invalid value for {nulls}")
        absent = [m for m in missing if m not in nulls]
        if absent:
            why.append(f"no value for {absent}")
        return ParsedAnswer(values, STATUS_PARTIAL, "; ".join(why), notes)


def parse_answers(answers: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per answer: asin, the five slot values (None if missing), status, reason, notes."""
    parser = FitbParser(labels)
    rows = []
    for asin, text in zip(answers["asin"], answers["result"]):
        p = parser.parse(text)
        rows.append([asin, *p.values, p.status, p.reason, ",".join(p.notes)])
    return pd.DataFrame(rows, columns=["asin", *labels, "status", "reason", "notes"])


def parse_report(parsed: pd.DataFrame, labels: list[str], answers: pd.DataFrame | None = None,
                 name: str = "", n_examples: int = 3) -> dict:
    """Rows, rows with all five slots, slots filled per label, failures by reason with examples."""
    n = len(parsed)
    complete = parsed["status"].isin(COMPLETE)
    report = {
        "name": name,
        "rows": n,
        "complete_rows": int(complete.sum()),
        "complete_rate": float(complete.mean()) if n else 0.0,
        "strict_rows": int((parsed["status"] == STATUS_STRICT).sum()),
        "strict_rate": float((parsed["status"] == STATUS_STRICT).mean()) if n else 0.0,
        "status_counts": {k: int(v) for k, v in parsed["status"].value_counts().items()},
        "slots_filled": {lab: int(parsed[lab].notna().sum()) for lab in labels},
        "notes_counts": {},
        "failures": [],
    }
    notes = parsed["notes"].str.split(",").explode()
    report["notes_counts"] = {k: int(v) for k, v in notes[notes != ""].value_counts().items()}
    texts = dict(zip(answers["asin"], answers["result"])) if answers is not None else {}
    bad = parsed[~complete]
    for (status, reason), grp in bad.groupby(["status", "reason"], sort=True):
        report["failures"].append({
            "status": status,
            "reason": reason,
            "count": int(len(grp)),
            "examples": [{"asin": a, "text": str(texts.get(a, ""))[:300]} for a in grp["asin"].head(n_examples)],
        })
    return report
