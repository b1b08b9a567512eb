"""Synthetic networks for the playout tests: packets with media timestamps, arrival schedules.

A sender emits 20 ms packets of a 16 kHz signal (as aiortc hands them over: s16 stereo
48 kHz, pts in 1/48000 on the sender's clock). An arrival schedule says when each packet
reaches the server (None: lost). :func:`run` interleaves arrivals with 25 Hz ticks on the
server's clock and returns every job, so tests can check what was played, when, and how.
"""

from __future__ import annotations

import fractions
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np

from streamer.audio.ingest import pcm_to_frame
from streamer.audio.jitter import LoopStalls
from streamer.playout.pipeline import FrameJob, SessionPipeline

PACKET_S = 0.02
PACKET_16K = 320
TICK_S = 0.04
TIME_BASE = fractions.Fraction(1, 48_000)


def packet(pcm_16k: np.ndarray, k: int) -> av.AudioFrame:
    """Packet ``k`` (20 ms) of ``pcm_16k`` (looped) as a decoded aiortc frame with its pts."""
    n = pcm_16k.shape[0]
    idx = (np.arange(k * PACKET_16K, (k + 1) * PACKET_16K)) % n
    up = np.repeat(pcm_16k[idx], 3)
    s16 = (np.clip(up, -1, 1) * 32767).astype(np.int16)
    frame = pcm_to_frame(np.stack((s16, s16), axis=1), 48_000)
    frame.pts = k * 960
    frame.time_base = TIME_BASE
    return frame


def send_times(n_packets: int, clock_ppm: float = 0.0) -> np.ndarray:
    """When the sender emits each packet, on the server's clock: a sender whose clock is
    ``clock_ppm`` fast produces its 20 ms of media in slightly less real time."""
    return np.arange(n_packets) * PACKET_S / (1.0 + clock_ppm * 1e-6)


def jittered(sent_s: np.ndarray, jitter_s: float, rng: np.random.Generator) -> np.ndarray:
    """Each packet delayed by a uniform 0..jitter_s, order kept (none overtakes another)."""
    arrive = sent_s + rng.uniform(0.0, jitter_s, sent_s.shape[0])
    return np.maximum.accumulate(arrive)


@dataclass
class Run:
    jobs: list[FrameJob]
    tick_s: list[float]


def run(
    pipeline: SessionPipeline,
    pcm_16k: np.ndarray,
    arrivals_s: np.ndarray,
    lost: np.ndarray | None = None,
    tick_phase_s: float = 0.013,
    extra_s: float = 1.0,
    on_tick: Callable[[FrameJob], None] | None = None,
    server_stalls: Sequence[tuple[float, float]] = (),
    loop_stalls: LoopStalls | None = None,
    read_first: bool = False,
) -> Run:
    """Feed packet ``k`` at ``arrivals_s[k]`` (skipping ``lost`` ones) and tick every 40 ms
    from ``tick_phase_s`` until ``extra_s`` after the last arrival. Arrivals at the same
    instant as a tick come first.

    ``server_stalls``: (start, end) times when the server itself stood still, as its scheduler
    lives through them: the first tick due in one fires at its end (told to ``loop_stalls``,
    which the pipeline should watch, as is each next tick's deadline), the others are skipped,
    and packets that came in it are read just after that tick (``read_first``: just before
    it, as when the loop runs the socket's callbacks before the overdue timer)."""
    n = arrivals_s.shape[0]
    lost = np.zeros(n, bool) if lost is None else lost
    arrivals_s = arrivals_s.copy()
    fired: dict[float, float] = {}  # a tick's firing time -> its deadline
    end_s = float(arrivals_s.max()) + extra_s
    n_ticks = int((end_s - tick_phase_s) / TICK_S) + 1
    ticks = tick_phase_s + TICK_S * np.arange(n_ticks)
    for start_s, stop_s in server_stalls:
        inside = (ticks >= start_s) & (ticks < stop_s)
        if inside.any():
            fired[stop_s] = float(ticks[inside][0])
            ticks = np.sort(np.append(ticks[~inside], stop_s))
        held = (arrivals_s >= start_s) & (arrivals_s < stop_s)
        arrivals_s[held] = stop_s if read_first else stop_s + 1e-4
    order = np.argsort(arrivals_s, kind="stable")
    jobs: list[FrameJob] = []
    k = 0
    for m, t in enumerate(ticks):
        while k < n and arrivals_s[order[k]] <= t:
            j = int(order[k])
            if not lost[j]:
                pipeline.push_audio(packet(pcm_16k, j), float(arrivals_s[j]))
            k += 1
        if loop_stalls is not None and float(t) in fired:
            loop_stalls.note(fired[float(t)], float(t))
        job = pipeline.next_job(float(t))
        if loop_stalls is not None and m + 1 < len(ticks):
            following = float(ticks[m + 1])
            loop_stalls.expect(fired.get(following, following))
        jobs.append(job)
        if on_tick is not None:
            on_tick(job)
    return Run(jobs, ticks.tolist())
