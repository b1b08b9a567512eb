"""The server's playout-buffer metrics, as the benchmarks and the soak read them from /metrics.

The server exports them once it has an adaptive playout buffer; until then every figure here
is ``None`` (printed n/a), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.probe import promtext

CONCEALED = "avatar_playout_concealed_frames_total"
LEVEL_CHANGES = "avatar_playout_level_changes_total"  # label change="insert" | "skip"
SPEECH_DROPPED = "avatar_speech_frames_dropped_total"
TARGET_DELAY = "avatar_playout_target_delay_seconds"  # a gauge per sink, label sink


@dataclass(frozen=True)
class Playout:
    """One scrape: counters since the server started, and every sink's target delay (s)."""

    concealed: float | None = None
    inserts: float | None = None
    skips: float | None = None
    speech_dropped: float | None = None
    target_delay_s: dict[str, float] = field(default_factory=dict)

    def minus(self, before: Playout) -> Playout:
        """The counters between ``before`` and this scrape; this scrape's target delays."""
        return Playout(
            _minus(self.concealed, before.concealed),
            _minus(self.inserts, before.inserts),
            _minus(self.skips, before.skips),
            _minus(self.speech_dropped, before.speech_dropped),
            dict(self.target_delay_s),
        )


def playout(samples: dict[str, list[tuple[dict[str, str], float]]]) -> Playout:
    """The playout metrics of one parsed scrape (:func:`promtext.parse`)."""

    def counter(name: str, **labels: str) -> float | None:
        return promtext.value(samples, name, **labels) if name in samples else None

    return Playout(
        concealed=counter(CONCEALED),
        inserts=counter(LEVEL_CHANGES, change="insert"),
        skips=counter(LEVEL_CHANGES, change="skip"),
        speech_dropped=counter(SPEECH_DROPPED),
        target_delay_s={
            labels.get("sink", ""): value for labels, value in samples.get(TARGET_DELAY, [])
        },
    )


def _minus(after: float | None, before: float | None) -> float | None:
    return None if after is None else after - (before or 0.0)
