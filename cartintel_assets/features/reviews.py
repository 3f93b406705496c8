"""Review signals: a sentiment score and friction aspects per review, and their aggregates per
product and category. Offline and lexicon-based: VADER (vaderSentiment, its lexicon ships inside
the package) and word patterns per aspect. No Dagster import.

Sentiment: the mean VADER compound score of the review's sentences, averaged with the title's
compound score when there is a title; in [-1, 1]. Sentence-level averaging keeps long positive
reviews with one complaint from saturating at +1 (measured on the real clothing reviews: ROC-AUC
0.89 for ratings <= 2 vs >= 4, against 0.85 for the compound score of the whole text).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.warehouse.tables import typed_temp_table

ASPECTS: tuple[str, ...] = ("shipping", "price", "size_fit", "quality", "returns", "service")

# Word patterns per aspect (case-insensitive, on word boundaries). Revised once against a
# hand-labelled development sample of real reviews (cartintel_tests/data/
# review_aspect_labels_dev.csv) and measured on a separate held-out sample: "arrived" alone is
# narrative ("when it arrived, I loved it"), "support" in apparel is the garment's, "thin" is often
# a body type, and "cheap" alone is a quality word. Shipping cost is shipping, not price.
_ARRIVAL_QUALIFIER = (
    r"late|early|earlier|sooner|quickly|quicker|fast|faster|promptly|on time|in time|damaged"
    r"|broken|torn|lost"
    r"|in (?:\d+|a few|two|three|several) (?:days?|weeks?)|a (?:day|week) late|next day|yet"
)
_PATTERNS: dict[str, str] = {
    "shipping": r"shipping|shipped|ship (?:it|to|fee|cost)|free ship|deliver(?:y|ed|ies)"
    r"|postage|courier|dispatch(?:ed)?|took (?:forever|ages|weeks) to (?:arrive|come)"
    r"|never (?:arrived|came)|way too expensive to ship"
    rf"|arriv(?:e|ed|es|al)\W+(?:\w+\W+){{0,3}}?(?:{_ARRIVAL_QUALIFIER})",
    "price": r"price[ds]?|pricey|overpriced|(?:good|great|poor|bad) value|value for|worth"
    r"|money|bargain|on sale|full price|discount(?:ed)?|expensive(?! to ship)|penny|pennies"
    r"|paid",
    "size_fit": r"siz(?:e|es|ed|ing)|fit(?:s|ting|ted)?|tight|loose|snug|baggy|petite"
    r"|runs? (?:small|large|big|true)|too (?:small|big|large|long|short)|length|waist|xs|xl",
    "quality": r"quality|material|fabric(?<!much fabric)(?<!lot of fabric)|stitch(?:ing|es)?"
    r"|seams?|flimsy|sturdy|durable|well made|fell apart|pill(?:ed|ing|s)?"
    r"|(?:fabric|material|is|was|so|very|too|feels|seems|bit) thin|thin (?:fabric|material)"
    r"|ripped|tore|torn|holes?|shrunk|shrank|broke|cheap(?:ly)? made|cheap material"
    r"|looks cheap|feels cheap|premium",
    "returns": r"return(?:s|ed|ing)?|refund(?:ed)?|exchang(?:e|ed)|sent (?:it )?back|send (?:it )?back",
    "service": r"customer (?:service|care|support)|support (?:team|staff|was|were|sorted|replied"
    r"|answered|never)|staff|sales ?associates?|seller|rude|replied|no reply|never answered",
}


def patterns_digest() -> str:
    """A fingerprint of the aspect patterns: hand labels of the tagger's output hold for the
    patterns they were made with, and are void (to be relabelled) once the patterns change."""
    text = "\n".join(f"{a}={_PATTERNS[a]}" for a in sorted(_PATTERNS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_COMPILED = {a: re.compile(rf"\b(?:{p})\b", re.IGNORECASE) for a, p in _PATTERNS.items()}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
NEGATIVE_BELOW = -0.05  # VADER's own convention for a negative compound score

# Shop-friction words VADER's general lexicon scores as neutral (valence on its -4..4 scale), and
# "fit", which it reads as "healthy" (+1.5) where reviews mean the noun ("the fit is off").
FRICTION_LEXICON: dict[str, float] = {
    "fit": 0.0,
    "slow": -1.5,
    "late": -1.5,
    "forever": -1.0,
    "overpriced": -2.0,
    "flimsy": -1.8,
    "hassle": -1.8,
    "nightmare": -2.5,
    "inconsistent": -1.2,
    "tight": -0.8,
    "unflattering": -1.8,
    "unhelpful": -1.8,
    "waiting": -0.8,
    "apart": -1.0,
}


@lru_cache(maxsize=1)
def _analyzer():  # type: ignore[no-untyped-def]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(FRICTION_LEXICON)
    return analyzer


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s.strip()]


def tag_aspects(text: str) -> set[str]:
    """The friction aspects a text mentions."""
    return {a for a, rx in _COMPILED.items() if rx.search(text)}


def review_signals(
    texts: Sequence[str | None], titles: Sequence[str | None] | None = None
) -> pd.DataFrame:
    """Per review: `sentiment` in [-1, 1], `aspect_<a>` (mentioned) and `negative_<a>` (mentioned
    in a negative sentence, or in a neutral sentence of a negative review: "Really disappointed.
    It arrived a week late." is a shipping complaint) for every aspect in ASPECTS."""
    vader = _analyzer()
    titles = titles if titles is not None else [None] * len(texts)
    rows = []
    for text, title in zip(texts, titles, strict=True):
        parts = sentences(text) if isinstance(text, str) else []
        scores = [vader.polarity_scores(s)["compound"] for s in parts]
        overall = float(np.mean(scores)) if scores else 0.0
        if isinstance(title, str) and title.strip():
            head = vader.polarity_scores(title)["compound"]
            overall = 0.5 * (overall + head) if scores else head
        mentioned: set[str] = set()
        negative: set[str] = set()
        for s, score in zip(parts, scores, strict=True):
            found = tag_aspects(s)
            mentioned |= found
            neutral = abs(score) <= -NEGATIVE_BELOW
            if score < NEGATIVE_BELOW or (neutral and overall < NEGATIVE_BELOW):
                negative |= found
        row: dict[str, float | bool] = {"sentiment": overall}
        for a in ASPECTS:
            row[f"aspect_{a}"] = a in mentioned
            row[f"negative_{a}"] = a in negative
        rows.append(row)
    columns = ["sentiment", *(f"{k}_{a}" for a in ASPECTS for k in ("aspect", "negative"))]
    return pd.DataFrame(rows, columns=columns)


def aggregate_signals(
    signals: pd.DataFrame, by: str | list[str], min_reviews: int = 1
) -> pd.DataFrame:
    """Per value of `by`: review count, mean rating and sentiment, share of negative reviews, and
    per aspect the share of reviews mentioning it and mentioning it negatively."""
    flags = [c for c in signals.columns if c.startswith(("aspect_", "negative_"))]
    g = signals.groupby(by, observed=True, dropna=False)  # an unknown category is a group too
    out = pd.DataFrame(
        {
            "reviews": g.size(),
            "mean_rating": g["rating"].mean(),
            "mean_sentiment": g["sentiment"].mean(),
            "negative_share": g["sentiment"].apply(lambda s: float((s < NEGATIVE_BELOW).mean())),
        }
    )
    out = out.join(g[flags].mean().add_prefix("share_"))
    return out[out["reviews"] >= min_reviews].reset_index()


# The review_signals table, in column order; the warehouse adds `partition_date`.
SIGNAL_COLUMNS: dict[str, str] = {
    "review_id": "VARCHAR",
    "product_id": "VARCHAR",
    "category": "VARCHAR",
    "customer_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "rating": "INTEGER",
    "sentiment": "DOUBLE",
    **{f"{k}_{a}": "BOOLEAN" for a in ASPECTS for k in ("aspect", "negative")},
}


def day_review_signals(con: duckdb.DuckDBPyConnection, day: date, into: str) -> pd.DataFrame:
    """Signals of the reviews landed on `day`, with the product's category as of that day; also
    kept, typed, in the temporary table `into`."""
    reviews = con.execute(
        "SELECT r.review_id, r.product_id, p.category, r.customer_id, r.ts, r.rating, r.text"
        " FROM raw_reviews r LEFT JOIN ("
        "   SELECT product_id, arg_max(category, partition_date) AS category FROM raw_products"
        "   WHERE partition_date <= $day GROUP BY product_id) p USING (product_id)"
        " WHERE r.partition_date = $day ORDER BY r.review_id",
        {"day": day},
    ).df()
    signals = review_signals(reviews["text"].tolist())
    out = pd.concat([reviews.drop(columns=["text"]), signals], axis=1)
    typed_temp_table(con, out, SIGNAL_COLUMNS, into)
    return out
