"""Sentiment: macro-F1 of ``chalicelib.sentiment.score`` on human-labelled airline tweets.

The data are the shared folder's ``airline/tweets_dev.csv``: real tweets to US airlines with
the crowd's label (negative, neutral, positive). The baseline is VADER as published, on the
same texts in the same run, read with its own +-0.05 thresholds. Speed is reported too:
``score()`` against a bare ``polarity_scores`` over the same texts (see ``timing``).
"""

from __future__ import annotations

import csv
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.result import BenchResult, Goal
from chalicelib.sentiment import score

DATA_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "airline" / "tweets_dev.csv"
LABELS = ("negative", "neutral", "positive")
GOAL = 0.70
NEGATIVE_PRECISION_GOAL = 0.90
# The rules were written looking at these airlines' tweets only; the others were scored
# afterwards to see whether they generalise (and one more is held back by the project).
DEVELOPED_ON = ("United", "American")
TIMING_ROUNDS = 5
TIMING_CHUNK = 200


@dataclass(frozen=True)
class Tweet:
    text: str
    airline: str
    label: str


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.support,
            "predicted": self.predicted,
        }


def load(path: Path = DATA_FILE) -> list[Tweet]:
    if not path.is_file():
        raise RuntimeError(
            f"airline tweets not found: expected {path} "
            "(the shared data folder next to the repository; see its README.md)"
        )
    with path.open(encoding="utf-8", newline="") as handle:
        tweets = [
            Tweet(row["text"], row["airline"], row["airline_sentiment"])
            for row in csv.DictReader(handle)
        ]
    unknown = {t.label for t in tweets} - set(LABELS)
    if not tweets or unknown:
        raise RuntimeError(f"{path}: no rows, or unexpected labels {sorted(unknown)}")
    return tweets


def vader_label(compound: float) -> str:
    if compound >= 0.05:
        return "positive"
    if compound <= -0.05:
        return "negative"
    return "neutral"


def class_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, ClassScores]:
    pairs = Counter(zip(gold, predicted, strict=True))
    out = {}
    for label in LABELS:
        hits = pairs[(label, label)]
        support = sum(n for (g, _), n in pairs.items() if g == label)
        guessed = sum(n for (_, p), n in pairs.items() if p == label)
        precision = hits / guessed if guessed else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = ClassScores(precision, recall, f1, support, guessed)
    return out


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(s.f1 for s in class_scores(gold, predicted).values()) / len(LABELS)


def _confusion(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    pairs = Counter(zip(gold, predicted, strict=True))
    return {g: {p: pairs[(g, p)] for p in LABELS} for g in LABELS}


def _seconds(func: Callable[[str], object], texts: Sequence[str]) -> float:
    started = time.perf_counter()
    for text in texts:
        func(text)
    return time.perf_counter() - started


def timing(
    texts: Sequence[str], rounds: int = TIMING_ROUNDS, chunk: int = TIMING_CHUNK
) -> dict[str, Any]:
    """Seconds for ``score`` and for a bare VADER over ``texts``.

    The texts are timed in chunks of ``chunk``, each chunk ``rounds`` times per side, the two
    sides back to back in alternating order; a side's time is the sum over the chunks of its
    fastest round. Short chunks let both sides find the moments when the rest of the machine
    left the CPU alone, so the ratio holds on a busy machine too.
    """
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    polarity = SentimentIntensityAnalyzer().polarity_scores
    score("warm up")  # creates our analyzer and compiles the rules: not per-post costs
    ours = vader = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            best_ours = best_vader = float("inf")
            for index in range(rounds):
                if index % 2:
                    best_vader = min(best_vader, _seconds(polarity, part))
                    best_ours = min(best_ours, _seconds(score, part))
                else:
                    best_ours = min(best_ours, _seconds(score, part))
                    best_vader = min(best_vader, _seconds(polarity, part))
            ours += best_ours
            vader += best_vader
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        "texts": len(texts),
        "rounds": rounds,
        "chunk": chunk,
        "score_seconds": round(ours, 4),
        "vader_seconds": round(vader, 4),
        "score_us_per_text": round(ours / len(texts) * 1e6, 2),
        "vader_us_per_text": round(vader / len(texts) * 1e6, 2),
        "score_to_vader": round(ours / vader, 3),
    }


def run(path: Path = DATA_FILE, timing_rounds: int = TIMING_ROUNDS) -> BenchResult:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    tweets = load(path)
    texts = [t.text for t in tweets]
    gold = [t.label for t in tweets]
    ours_full = [score(text) for text in texts]
    ours = [s.label for s in ours_full]
    polarity = SentimentIntensityAnalyzer().polarity_scores
    vader = [vader_label(polarity(text)["compound"]) for text in texts]

    ours_classes, vader_classes = class_scores(gold, ours), class_scores(gold, vader)
    per_airline: dict[str, dict[str, Any]] = {}
    for airline in sorted({t.airline for t in tweets}, key=lambda a: (a not in DEVELOPED_ON, a)):
        rows = [i for i, t in enumerate(tweets) if t.airline == airline]
        g = [gold[i] for i in rows]
        per_airline[airline] = {
            "role": "developed on" if airline in DEVELOPED_ON else "checked",
            "tweets": len(rows),
            "labels": dict(Counter(g)),
            "ours_macro_f1": round(macro_f1(g, [ours[i] for i in rows]), 4),
            "vader_macro_f1": round(macro_f1(g, [vader[i] for i in rows]), 4),
            "ours_negative_precision": round(
                class_scores(g, [ours[i] for i in rows])["negative"].precision, 4
            ),
        }
    checked = [i for i, t in enumerate(tweets) if t.airline not in DEVELOPED_ON]
    developed = [i for i, t in enumerate(tweets) if t.airline in DEVELOPED_ON]
    terms = Counter(term for s in ours_full for term in s.terms)
    measured = macro_f1(gold, ours)
    details: dict[str, Any] = {
        "data": f"{path.parent.name}/{path.name}",
        "tweets": len(tweets),
        "labels": dict(Counter(gold)),
        "ours": {
            "macro_f1": round(measured, 4),
            "classes": {k: v.to_dict() for k, v in ours_classes.items()},
            "confusion_gold_to_predicted": _confusion(gold, ours),
        },
        "vader": {
            "macro_f1": round(macro_f1(gold, vader), 4),
            "classes": {k: v.to_dict() for k, v in vader_classes.items()},
            "confusion_gold_to_predicted": _confusion(gold, vader),
        },
        "negative_precision": round(ours_classes["negative"].precision, 4),
        "negative_precision_goal": NEGATIVE_PRECISION_GOAL,
        "developed_on": list(DEVELOPED_ON),
        "ours_macro_f1_developed_on": round(
            macro_f1([gold[i] for i in developed], [ours[i] for i in developed]), 4
        ),
        "ours_macro_f1_checked": round(
            macro_f1([gold[i] for i in checked], [ours[i] for i in checked]), 4
        ),
        "per_airline": per_airline,
        "posts_with_terms": sum(1 for s in ours_full if s.terms),
        "top_terms": dict(terms.most_common(10)),
        "timing": timing(texts, timing_rounds),
    }
    details["method_markdown"] = METHOD
    details["details_markdown"] = _details_markdown(details)
    return BenchResult(
        name="sentiment",
        title="Sentiment: macro-F1 on human-labelled airline tweets",
        unit="F1",
        measured=measured,
        baseline=macro_f1(gold, vader),
        goal=Goal("at_least", GOAL, on="measured"),
        details=details,
    )


METHOD = """\
**Data.** The shared folder's `airline/tweets_dev.csv`: 11,727 real tweets to five US
airlines (February 2015) with the crowd-sourced label `airline_sentiment`, negative,
neutral or positive (Figure Eight's "Twitter US Airline Sentiment"). The rows of a sixth
airline are held back by the project for a later evaluation and were never seen.

**Forewarn.** `chalicelib.sentiment.score`, as the listening flow and `forewarn sentiment`
call it: VADER with word valences corrected for posts to a brand ("please", "help", "hope"
and "like" carry no praise; "joke" mocks), service-failure terms (cancelled, on hold, lost
bag, no signal, ...) that make a post a complaint whatever its polite or sarcastic words,
complaint cues (negated verbs, "still", "why", time spent waiting, #fail-style hashtags)
that count as mildly negative words, and questions without complaint cues read as neutral.
The rules state what complaints look like in general; they were written while looking at
United's and American's tweets only, and the other airlines were scored afterwards to see
whether they generalise. Their figures led to two changes: the sarcasm cue "so much for" no
longer fires inside "thank you so much for", and a complaint cue weighs -1.5 (the median
negative word of VADER's lexicon) rather than -1.0, which helped the first two airlines and
left the others unchanged. No threshold was fitted to the labels: labels come from VADER's
own +-0.05 thresholds on the adjusted score.

**Baseline.** VADER 3.3.2 as published, `polarity_scores` on the same texts, +-0.05
thresholds. Macro-F1 is the mean of the three classes' F1; the goal also asks for a
negative precision of 0.90 (a warning must rarely be raised on posts that are not
complaints), reported below.

**Speed.** `score()` and a bare `polarity_scores` over all the texts with the garbage
collector off, in chunks of 200 texts, each chunk timed 5 times per side with the sides
back to back in alternating order; a side's time is the sum of its chunks' fastest rounds,
which keeps the ratio steady on a busy machine. `score()` makes exactly one
`polarity_scores` call per text.
"""


def _details_markdown(d: dict[str, Any]) -> str:
    ours, vader = d["ours"]["classes"], d["vader"]["classes"]
    lines = [
        "| Class | Forewarn P / R / F1 | VADER P / R / F1 | Tweets |",
        "|---|---:|---:|---:|",
    ]
    for label in LABELS:
        o, v = ours[label], vader[label]
        lines.append(
            f"| {label} | {o['precision']:.3f} / {o['recall']:.3f} / {o['f1']:.3f} "
            f"| {v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f} | {o['support']:,} |"
        )
    met = d["negative_precision"] >= d["negative_precision_goal"]
    lines += [
        f"| **macro-F1** | **{d['ours']['macro_f1']:.3f}** | **{d['vader']['macro_f1']:.3f}** "
        f"| {d['tweets']:,} |",
        "",
        "| Goal | Forewarn | Target | Met? |",
        "|---|---:|---:|---|",
        f"| macro-F1 | {d['ours']['macro_f1']:.3f} | ≥ {GOAL:.2f} "
        f"| {'yes' if d['ours']['macro_f1'] >= GOAL else '**no**'} |",
        f"| negative precision | {d['negative_precision']:.3f} "
        f"| ≥ {d['negative_precision_goal']:.2f} | {'yes' if met else '**no**'} |",
        "",
        "| Airline | Role | Tweets | Forewarn macro-F1 | VADER macro-F1 | Forewarn neg. P |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for airline, a in d["per_airline"].items():
        lines.append(
            f"| {airline} | {a['role']} | {a['tweets']:,} | {a['ours_macro_f1']:.3f} "
            f"| {a['vader_macro_f1']:.3f} | {a['ours_negative_precision']:.3f} |"
        )
    t = d["timing"]
    lines += [
        "",
        f"Macro-F1 on the airlines the rules were written on: "
        f"{d['ours_macro_f1_developed_on']:.3f}; on the others: {d['ours_macro_f1_checked']:.3f}. "
        f"{d['posts_with_terms']:,} posts name a service failure; the commonest terms: "
        + ", ".join(f"{term} ({n:,})" for term, n in d["top_terms"].items())
        + ".",
        "",
        f"Speed: `score()` {t['score_us_per_text']:.1f} µs per tweet against "
        f"{t['vader_us_per_text']:.1f} µs for a bare `polarity_scores`, "
        f"{t['score_to_vader']:.2f} times VADER's time ({t['texts']:,} tweets, fastest of "
        f"{t['rounds']} rounds per chunk of {t['chunk']}).",
    ]
    return "\n".join(lines)
