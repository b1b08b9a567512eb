"""Read figures out of Prometheus text: counters, and quantiles of histograms."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)]. A metric exported without samples yet (a labelled one
    before its first label set) is present with none: absent means not exported."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(f"{family.name}_total" if family.type == "counter" else family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def buckets(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str
) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of histogram ``name``, sorted by bound."""
    pairs = [(float(lab["le"]), v) for lab, v in samples.get(f"{name}_bucket", []) if "le" in lab]
    return sorted(pairs)


def quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """Quantile by linear interpolation inside the bucket that holds it (NaN when empty)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    total = cumulative[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            frac = 0.0 if span <= 0 else (rank - lower_count) / span
            return lower_bound + frac * (bound - lower_bound)
        lower_bound, lower_count = bound, count
    return lower_bound


def diff(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Bucket counts observed between two scrapes."""
    old = dict(before)
    return [(b, c - old.get(b, 0.0)) for b, c in after]
