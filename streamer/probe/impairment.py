"""Network impairment for a client peer's sent audio: jitter and loss, decided per packet.

The pure, synchronous half (no asyncio, no aiortc): :class:`Impairment` is what a user asks
for (``--jitter-ms``, ``--loss-pct``, ``--seed``); :class:`ImpairmentSchedule` decides, for each
RTP packet in sending order, whether the network loses it and otherwise when it leaves. The
asyncio half that applies it to a real aiortc sender is :mod:`streamer.probe.impaired_link`.

The model: every packet draws an independent loss (probability ``loss_pct`` / 100) and an
independent delay, uniform in [0, ``jitter_ms``]; a delayed packet never overtakes the one
before it (release = max(own send time + delay, previous release)), as on a path whose queue
varies but does not reorder. Both draws are made for every packet, so one seed gives the same
delays whatever the loss.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import Protocol

MAX_JITTER_MS = 2000.0  # beyond this it is an outage, not jitter


class RandomSource(Protocol):
    """The RNG seam: ``random()`` is uniform in [0, 1) (``random.Random`` is one)."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Impairment:
    """Jitter (ms, uniform 0..J per packet, order kept) and loss (% of packets) on the audio a
    client sends; ``seed`` makes a run repeat. The default impairs nothing."""

    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter_ms <= MAX_JITTER_MS:
            raise ValueError(f"jitter must be 0-{MAX_JITTER_MS:g} ms, not {self.jitter_ms:g}")
        if not 0.0 <= self.loss_pct < 100.0:
            raise ValueError(f"loss must be at least 0 % and under 100 %, not {self.loss_pct:g}")

    @property
    def active(self) -> bool:
        return self.jitter_ms > 0 or self.loss_pct > 0

    def for_peer(self, index: int) -> Impairment:
        """The same impairment with the seed of peer ``index`` (0, 1, ...): peers in one run
        draw different, still repeatable, packets."""
        return Impairment(self.jitter_ms, self.loss_pct, self.seed + index)

    def schedule(self) -> ImpairmentSchedule:
        """A fresh schedule drawing from ``random.Random(seed)``."""
        return ImpairmentSchedule(
            self.jitter_ms / 1e3, self.loss_pct / 100, random.Random(self.seed)
        )

    def describe(self) -> str:
        if not self.active:
            return "none"
        return f"jitter 0-{self.jitter_ms:g} ms, loss {self.loss_pct:g} %, seed {self.seed}"


class ImpairmentSchedule:
    """Per packet, in sending order: lost (``None``) or the time it leaves (same clock as the
    send times given). Counts what it decided."""

    def __init__(self, jitter_s: float, loss_fraction: float, rng: RandomSource) -> None:
        self.jitter_s = jitter_s
        self.loss_fraction = loss_fraction
        self._rng = rng
        self._last_release_s = float("-inf")
        self.packets = 0
        self.dropped = 0
        self.held_s_total = 0.0  # sum of (release - send) over the packets that leave
        self.held_s_max = 0.0

    def release_at_s(self, sent_at_s: float) -> float | None:
        """When the packet sent at ``sent_at_s`` leaves, or ``None`` when it is lost. Never
        earlier than the previous packet's release."""
        self.packets += 1
        lost = self._rng.random() < self.loss_fraction
        delay_s = self._rng.random() * self.jitter_s
        if lost:
            self.dropped += 1
            return None
        release_s = max(sent_at_s + delay_s, self._last_release_s)
        self._last_release_s = release_s
        held_s = release_s - sent_at_s
        self.held_s_total += held_s
        self.held_s_max = max(self.held_s_max, held_s)
        return release_s


def jitter_ms_list(text: str) -> list[float]:
    """``--jitter-ms 0,20,40`` -> [0.0, 20.0, 40.0] (argparse ``type``)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ms: {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("give at least one jitter value")
    for v in values:
        _check(jitter_ms=v)
    return values


def jitter_ms_value(text: str) -> float:
    """``--jitter-ms 30`` -> 30.0, checked (argparse ``type``)."""
    return _check(jitter_ms=_float(text)).jitter_ms


def loss_pct_value(text: str) -> float:
    """``--loss-pct 1.5`` -> 1.5, checked (argparse ``type``)."""
    return _check(loss_pct=_float(text)).loss_pct


def add_arguments(parser: argparse.ArgumentParser, jitter_list: bool) -> None:
    """``--jitter-ms`` (a comma list when ``jitter_list``), ``--loss-pct``, ``--seed``."""
    g = parser.add_argument_group("network impairment of the audio each client peer sends")
    if jitter_list:
        g.add_argument(
            "--jitter-ms",
            type=jitter_ms_list,
            default=[0.0],
            help="comma-separated: per packet a uniform 0..J ms delay, order kept (one row each)",
        )
    else:
        g.add_argument(
            "--jitter-ms",
            type=jitter_ms_value,
            default=0.0,
            help="per packet a uniform 0..J ms delay, order kept",
        )
    g.add_argument(
        "--loss-pct", type=loss_pct_value, default=0.0, help="share of packets lost at random"
    )
    g.add_argument("--seed", type=int, default=1, help="peer k draws from seed + k: runs repeat")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def _check(jitter_ms: float = 0.0, loss_pct: float = 0.0) -> Impairment:
    try:
        return Impairment(jitter_ms, loss_pct)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
