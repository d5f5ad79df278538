"""Sentiment of a post about a brand, tuned for complaints about a service.

VADER (Hutto & Gilbert, 2014) reads general social media well but misreads posts to a brand:
"please help", "hope" and "like" count as praise, so a polite complaint scores positive, while
a flat report of a failure ("flight cancelled, 3 hours on hold") has no sentiment words at all.
This module keeps VADER's one pass over the text and adds what a complaint looks like:

* word valences corrected for posts to a brand (``valence`` in ``lexicons/complaints.json``),
  written into the analyzer's lexicon once, so a post still costs one ``polarity_scores``;
* service-failure terms (cancelled, on hold, no signal, ...), each in an issue cluster, and
  cues of a complaint (negated verbs, "still", "why", time spent waiting; after
  Preotiuc-Pietro et al., "Automatically Identifying Complaints in Social Media", ACL 2019)
  or of sarcasm ("thanks for nothing"), all found by one precompiled regular expression;
* rules that combine the two (``_adjust``) in VADER's own units, so the result is still a
  compound score in -1..1, read with VADER's +-0.05 thresholds.

Importing this module is cheap: vaderSentiment is imported, and the lexicon file read, by the
first ``score()``, so a Lambda function that never scores a post never pays for them.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEXICON_PATH = Path(__file__).parent / "lexicons" / "complaints.json"

CLUSTERS: tuple[str, ...] = (
    "delay",
    "cancellation",
    "outage",
    "baggage",
    "customer_service",
    "booking_refund",
    "delivery",
)

# VADER's thresholds for its compound score (Hutto & Gilbert, 2014).
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05
# VADER's normalisation: compound = s / sqrt(s^2 + alpha) for a sum of word valences s.
_ALPHA = 15.0
# A reported failure weighs as a clearly negative word on VADER's -4..4 scale (between
# "delay", -1.3, and "bad", -2.5), and each complaint cue as a typical one: -1.5 is the
# median of the negative words in VADER's lexicon. A few cues are enough: the tenth "not"
# says no more than the third.
FAILURE_VALENCE = -2.0
COMPLAINT_VALENCE = -1.5
MAX_COMPLAINT_CUES = 3

# Kinds of pattern. A remedy is a term whose denial is still a complaint ("no refund").
_TERM, _REMEDY, _SARCASM, _COMPLAINT = "term", "remedy", "sarcasm", "complaint"
# "no delays", "not cancelled": a failure that is denied is no failure.
_DENIALS = (" no ", " not ")


@dataclass(frozen=True)
class Sentiment:
    label: str  # "negative" | "neutral" | "positive"
    compound: float  # -1..1, VADER compound after the domain rules
    # Canonical service-failure terms, in order of first appearance, no repeats.
    terms: tuple[str, ...]

    @property
    def clusters(self) -> tuple[str, ...]:
        """The issue clusters of ``terms``, in the same order, without repeats.

        A term the lexicon no longer has (a stored result, scored before a term was renamed)
        has no cluster and is left out rather than failing.
        """
        known = _rules().cluster_of_term
        return tuple(dict.fromkeys(known[term] for term in self.terms if term in known))


@dataclass(frozen=True)
class _Rules:
    pattern: re.Pattern[str]
    # Named group -> (kind, canonical term or "").
    groups: dict[str, tuple[str, str]]
    cluster_of_term: dict[str, str]
    valence: dict[str, float]
    rewrites: tuple[tuple[str, str], ...]


_rules_lock = threading.Lock()
_loaded_rules: _Rules | None = None
_analyzer_lock = threading.Lock()
_polarity: Callable[[str], dict[str, float]] | None = None


def _rules() -> _Rules:
    global _loaded_rules
    if _loaded_rules is None:
        with _rules_lock:
            if _loaded_rules is None:
                _loaded_rules = _load_rules(LEXICON_PATH)
    return _loaded_rules


def _load_rules(path: Path) -> _Rules:
    """Read and check a lexicon file; ValueError says what is wrong with it."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    entries: list[tuple[str, str, str]] = []
    cluster_of_term: dict[str, str] = {}
    for entry in data["terms"]:
        term, cluster = str(entry["term"]), str(entry["cluster"])
        if cluster not in CLUSTERS:
            raise ValueError(f"{path}: term {term!r} has unknown cluster {cluster!r}")
        if term in cluster_of_term:
            raise ValueError(f"{path}: term {term!r} is listed twice")
        cluster_of_term[term] = cluster
        kind = _REMEDY if entry.get("remedy", False) else _TERM
        entries += [(kind, term, str(p)) for p in entry["patterns"]]
    # Terms first: where two patterns match at the same place the first listed wins, so
    # "still waiting" is a term rather than the cue "still".
    entries += [(_SARCASM, "", str(p)) for p in data["cues"]["sarcasm"]]
    entries += [(_COMPLAINT, "", str(p)) for p in data["cues"]["complaint"]]
    try:
        pattern, groups = _compile(entries)
    except (re.error, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    valence = {
        str(word).lower(): float(value)
        for group in data["valence"].values()
        for word, value in group.items()
    }
    rewrites = tuple((str(old), str(new)) for old, new in data.get("rewrites", {}).items())
    return _Rules(pattern, groups, cluster_of_term, valence, rewrites)


def _compile(
    entries: Iterable[tuple[str, str, str]],
) -> tuple[re.Pattern[str], dict[str, tuple[str, str]]]:
    """One expression for all patterns, as fast as Python's ``re`` allows.

    Two things make ``re`` slow on many patterns: it tries each alternative in turn wherever a
    word may start, and it steps through the text one position at a time unless the
    expression begins with a plain character or character class. So the expression begins
    with the class of non-word characters, ``[^\\w]``, which ``re`` skips to in its C loop (the
    caller puts a space before the text so that its first word counts too), and the patterns
    are merged on their common leading letters like a trie (``c(?:ancel...|an't...)``), since
    ``re`` rejects at once an alternative that starts with another letter. The search then
    costs about as much for 150 patterns as for a few. An empty named group ends each
    pattern, so ``match.lastgroup`` says which one matched.
    """
    items: list[tuple[str, str]] = []
    groups: dict[str, tuple[str, str]] = {}
    for index, (kind, value, source) in enumerate(entries):
        hashtag = source.startswith("#")
        body = source[1:] if hashtag else source
        if re.compile(body).groups:
            raise ValueError(f"pattern {source!r} has a capturing group; use (?:...)")
        if _has_top_level_bar(body):
            raise ValueError(f"pattern {source!r} has a top-level '|'; list the parts apart")
        if hashtag:
            # The "#" is the non-word character before the word. It is checked behind the
            # first letter, so that the letter can still be merged with other patterns'.
            first = _first_literal(body)
            body = f"{first}(?<=#{first}){body[1:]}" if first else f"(?<=#){body}"
        name = f"p{index}"
        groups[name] = (kind, value)
        items.append((body, f"(?P<{name}>)"))
    source = r"[^\w](?:" + _trie(items) + r")(?!\w)"
    return re.compile(source), groups


def _trie(items: list[tuple[str, str]]) -> str:
    """An alternation of ``body + end`` for the items, merged on common leading letters.

    Where two patterns could match at the same place the first listed still wins: only
    patterns that start with the same letter are merged, and never across a pattern that
    does not start with a letter.
    """
    merged: list[tuple[str, list[tuple[str, str]]]] = []
    open_groups: dict[str, int] = {}
    for body, end in items:
        first = _first_literal(body)
        if first is None or len(body) == len(first):
            merged.append(("", [(body, end)]))
            open_groups.clear()
        elif first in open_groups:
            merged[open_groups[first]][1].append((body[len(first) :], end))
        else:
            open_groups[first] = len(merged)
            merged.append((first, [(body[len(first) :], end)]))
    parts = []
    for first, members in merged:
        if len(members) == 1:
            parts.append(first + members[0][0] + members[0][1])
        else:
            parts.append(f"{first}(?:{_trie(members)})")
    return "|".join(parts)


def _first_literal(body: str) -> str | None:
    """The pattern's first character if it matches only itself and is not repeated."""
    first = body[:1]
    if not (first.isalnum() or first in "'\u2019-&;,@ "):
        return None
    return None if body[1:2] and body[1:2] in "?*+{" else first


def _has_top_level_bar(source: str) -> bool:
    """Whether ``source`` is an alternation at its top level, which merging would break."""
    depth, index, in_class = 0, 0, False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A "]" right after "[" (or "[^") is a literal.
            if source[index + 1 : index + 2] == "^":
                index += 1
            if source[index + 1 : index + 2] == "]":
                index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        index += 1
    return False


def _load_analyzer() -> Callable[[str], dict[str, float]]:
    global _polarity
    with _analyzer_lock:
        if _polarity is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            analyzer = SentimentIntensityAnalyzer()
            for word, value in _rules().valence.items():
                if value:
                    analyzer.lexicon[word] = value
                else:
                    # Not a sentiment word here. Removed rather than set to 0, which VADER
                    # would still boost ("very please" +0.29) and spend time on.
                    analyzer.lexicon.pop(word, None)
            _polarity = analyzer.polarity_scores
        return _polarity


def cluster_of(term: str) -> str:
    """The issue cluster of a canonical term; KeyError for a term the lexicon does not have."""
    return _rules().cluster_of_term[term]


def score(text: str) -> Sentiment:
    polarity = _polarity or _load_analyzer()
    rules = _rules()
    for old, new in rules.rewrites:
        if old in text:
            text = text.replace(old, new)
    # The leading space lets a denial be found at the very start of the text too.
    lower = " " + text.lower()
    terms: list[str] = []
    sarcasm = False
    complaints = 0
    groups = rules.groups
    for match in rules.pattern.finditer(lower):
        kind, term = groups[match.lastgroup or ""]
        if kind == _COMPLAINT:
            complaints += 1
        elif kind == _SARCASM:
            sarcasm = True
        elif term not in terms:
            start = match.start()
            # The match starts with the character before the word.
            if kind == _REMEDY or not lower.endswith(_DENIALS, max(0, start - 4), start + 1):
                terms.append(term)
    compound = _adjust(polarity(text)["compound"], bool(terms), sarcasm, complaints, "?" in text)
    return Sentiment(_label(compound), compound, tuple(terms))


def _adjust(
    compound: float, failure: bool, sarcasm: bool, complaints: int, question: bool
) -> float:
    """VADER's compound score after the rules for posts to a brand.

    The rules work on the sum of word valences VADER normalised (recovered from the compound
    score), adding the weights above as if they were words, then normalise again.
    """
    if not (failure or sarcasm or complaints):
        if question and compound > 0.0:
            # A question asks for information: its "thanks" and "great" are politeness.
            return 0.0
        return compound
    total = _valence_sum(compound)
    cues = COMPLAINT_VALENCE * min(complaints, MAX_COMPLAINT_CUES)
    if failure or sarcasm:
        # A post that reports a failure, or mocks, is a complaint: its positive words are
        # politeness ("please help") or sarcasm ("thanks for the 3 hour delay"), not praise.
        return _normalise(min(total, 0.0) + FAILURE_VALENCE + cues)
    return _normalise(total + cues)


def _valence_sum(compound: float) -> float:
    # VADER's normalisation inverted, clipped where it saturates.
    compound = max(-0.9999, min(0.9999, compound))
    return compound * math.sqrt(_ALPHA / (1.0 - compound * compound))


def _normalise(total: float) -> float:
    return total / math.sqrt(total * total + _ALPHA)


def _label(compound: float) -> str:
    if compound >= POSITIVE_THRESHOLD:
        return "positive"
    if compound <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"
