"""The speech-back measure on synthetic calls with known damage (no peers, no clock).

The sent clip is a synthetic voice; the returned audio goes through what the server really does
to it (Opus, 48 -> 16 -> 48 kHz, Opus: tests/speech_path.py), plus a delay. Damage is done the
way the server's playout buffer does it, in 40 ms frames: frames of speech removed (the level
restored with silence at the next pause), concealed (a faded, time-reversed copy of the frame
before), silence inserted or skipped in pauses.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamer.probe.speech_back import (
    SpeechBack,
    SpeechBackOptions,
    returned_audio,
    speech_back,
    sub_block_energy,
)
from tests.speech_path import FRAME, PACKET, RATE, T0_S, call


def frames(x: np.ndarray) -> list[np.ndarray]:
    return [x[k * FRAME : (k + 1) * FRAME] for k in range(x.size // FRAME)]


def edited(
    back: np.ndarray, threshold: float, *, drop_pct: float = 0, conceal: bool = False,
    moves: float = 0, seed: int = 3,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """``back`` with the server's edits (40 ms frames); also the share of speech frames hit."""
    rng = np.random.default_rng(seed)
    fs = frames(back)
    energy = np.array([np.mean(f.astype(np.float64) ** 2) for f in fs])
    speech = np.flatnonzero(energy > threshold)
    hit = set(rng.choice(speech, round(speech.size * drop_pct / 100), replace=False).tolist())
    out, owed, level = [], 0, 2
    silence = np.zeros(FRAME, np.float32)
    for k, f in enumerate(fs):
        quiet = energy[k] < threshold / 100
        if k in hit:
            if conceal:  # the frame before, reversed, fading to 0 (then silence)
                out.append(fs[k - 1][::-1] * np.linspace(1, 0, FRAME, dtype=np.float32))
            else:
                owed += 1
            continue
        if quiet and owed:  # the level comes back in the next pause
            out += [silence] * owed
            owed = 0
        if quiet and rng.random() < moves:  # the playout level moves by one frame, 0..4
            if rng.random() < 0.5 and level < 4:
                out.append(silence)
                level += 1
            elif level > 0:
                level -= 1
                continue
        out.append(f)
    return np.concatenate(out), len(hit) / speech.size


def measure(
    back: np.ndarray,
    delay_s: float = 0.2133,
    start_s: float = T0_S,
    end_s: float = T0_S + 100,
    pts_step_every_s: float = 0.0,
    **options: float,
) -> SpeechBack:
    """What a client receiving ``back`` ``delay_s`` after sending reads (arrival jitter 0-3 ms,
    pts on the 48 kHz clock; with ``pts_step_every_s``, the pts move 40 ms against the arrivals
    that often, as when the server skips ticks)."""
    speech, _, sent_at, _ = call()
    returned = np.concatenate((np.zeros(round(delay_s * RATE), np.float32), back))
    returned = returned[: returned.size // PACKET * PACKET]
    n = returned.size // PACKET
    rng = np.random.default_rng(11)
    at = T0_S + 0.05 + np.arange(n) * 0.02 + rng.uniform(0, 0.003, n)
    pts = np.arange(n, dtype=np.int64) * PACKET
    if pts_step_every_s:
        pts += (np.arange(n) * 0.02 // pts_step_every_s).astype(np.int64) * 2 * PACKET
    energy = np.concatenate(
        [sub_block_energy(returned[k * PACKET : (k + 1) * PACKET]) for k in range(n)]
    )
    pos = np.repeat(pts, PACKET // 48) + np.tile(np.arange(0, PACKET, 48), n)
    got = returned_audio(at, pts, pos, energy)
    return speech_back(speech, sent_at, got, start_s, end_s, SpeechBackOptions(**options))  # type: ignore[arg-type]


def test_the_clip_has_utterances_and_a_threshold() -> None:
    speech, clip, _, _ = call()
    assert len(speech.utterances) >= 4
    assert speech.threshold > 0
    assert speech.blocks == clip.size // PACKET


def test_intact_audio_comes_back_whole_at_its_delay() -> None:
    speech, _, _, back = call()
    got = measure(back)
    assert got.utterances >= 3 * len(speech.utterances) - 2  # all but the last loop's tail
    assert got.utterances_found == got.utterances
    assert got.fraction >= 0.99
    # 213.3 ms added + Opus' 2 x 6.5 ms + resamplers + 50 ms from sending to arrival.
    assert np.all(np.abs(got.utterance_delay_s - np.median(got.utterance_delay_s)) < 0.003)
    assert 0.26 <= float(np.median(got.utterance_delay_s)) <= 0.30


def test_rtp_positions_stepping_against_the_arrivals_do_not_move_the_measure() -> None:
    # A server that skips ticks (a stall) stamps its audio by a sample counter: arrival minus
    # position steps by 40 ms at each skip, ~580 times in a busy 30 min soak. The returned audio
    # is placed by position only locally, so steps adding up to 2 s over 100 s move nothing.
    _, _, _, back = call()
    got = measure(back, pts_step_every_s=2.0)
    assert got.utterances_found == got.utterances
    assert got.fraction >= 0.99
    assert np.all(np.abs(got.utterance_delay_s - np.median(got.utterance_delay_s)) < 0.005)
    assert 0.26 <= float(np.median(got.utterance_delay_s)) <= 0.30


def test_removed_speech_frames_are_missed() -> None:
    _, _, _, back = call()
    speech, *_ = call()
    damaged, share = edited(back, speech.threshold * 2, drop_pct=5)
    assert share == pytest.approx(0.05, abs=0.005)
    got = measure(damaged)
    assert got.fraction == pytest.approx(1 - share, abs=0.02)


def test_concealment_counts_no_more_than_its_faded_energy() -> None:
    speech, _, _, back = call()
    removed = measure(edited(back, speech.threshold * 2, drop_pct=5)[0]).fraction
    damaged, share = edited(back, speech.threshold * 2, drop_pct=5, conceal=True)
    got = measure(damaged).fraction
    # A linear fade keeps 1/3 of the frame's energy on average; with the 10 % codec tolerance
    # a concealed frame can count at most ~0.37 of a frame, and never less than nothing.
    assert removed - 0.01 <= got <= 1 - share * (1 - 0.37) + 0.01


@pytest.mark.parametrize(("every", "silent", "low", "high"), [(2, 1, 0.45, 0.75), (3, 2, 0.3, 0.6)])
def test_audio_chopped_in_the_first_loop_reads_low(
    every: int, silent: int, low: float, high: float
) -> None:
    # The first loop returns ``silent`` of every ``every`` 40 ms frames silent: 1/2, then 1/3
    # of its speech kept. Cut through 20 ms blocks (the chops are not aligned to the sent
    # packets), a block partly lost can count in full when energy from its neighbour moved in:
    # it reads above the share kept. So damaged, an utterance correlates too little to be
    # found anywhere; it is found near the delay at which the whole run correlates best.
    speech, clip, _, back = call()
    chopped = back.copy()
    for k in range(clip.size // FRAME):
        if k % every < silent:
            chopped[k * FRAME : (k + 1) * FRAME] = 0
    got = measure(chopped)
    first = got.utterance_at_s < T0_S + clip.size / RATE
    assert first.sum() == len(speech.utterances)
    assert low <= float(np.mean(got.utterance_fraction[first])) <= high
    assert np.all(got.utterance_fraction[~first] >= 0.98)


def test_silence_moved_between_words_changes_nothing() -> None:
    speech, _, _, back = call()
    moved, _ = edited(back, speech.threshold * 2, moves=0.3)
    assert moved.size != back.size
    got = measure(moved)
    assert got.fraction >= 0.99
    assert np.ptp(got.utterance_delay_s) >= 0.040  # the level really moved


def test_what_is_not_the_speech_does_not_count() -> None:
    _, clip, _, back = call()
    rng = np.random.default_rng(5)
    assert measure(np.zeros_like(back)).fraction == 0.0
    noise = (0.05 * rng.standard_normal(back.size)).astype(np.float32)
    assert measure(noise).fraction <= 0.05
    # Speech, but not what was sent then: nothing near the delay tracked, and anywhere else it
    # takes a correlation of 0.7 (here one 0.8 s utterance of six finds a look-alike).
    other_words = measure(np.roll(back, clip.size // 3))
    assert other_words.fraction <= 0.15
    assert other_words.utterances_found <= other_words.utterances / 6
    assert measure(back, delay_s=1.3).fraction == 0.0  # later than the 1 s looked at


def test_only_utterances_whose_return_fits_the_window_count() -> None:
    _, _, _, back = call()
    whole = measure(back)
    part = measure(back, start_s=T0_S + 5, end_s=T0_S + 20)
    # Counted: the utterance's context (100 ms before it) sent at or after start_s, and its
    # return (at most 1 s after the context's end) before end_s.
    assert part.utterance_at_s.min() >= T0_S + 5 + 0.1 - 0.003
    assert part.utterance_at_s.max() <= T0_S + 20 - 1.0 - 0.1
    inside = (whole.utterance_at_s >= T0_S + 5.1) & (whole.utterance_at_s <= T0_S + 18.9)
    assert 0 < part.utterances <= inside.sum() < whole.utterances
    assert part.fraction >= 0.98
