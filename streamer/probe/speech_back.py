"""How much of the speech a client sent came back in the audio the server returned: pure numpy.

The server returns the caller's audio delayed (about 100-400 ms), resampled 48 -> 16 -> 48 kHz
and Opus-coded twice. Its playout buffer may insert or remove 40 ms of silence between
utterances; on a bad network it may drop a 40 ms input frame (that speech is lost) or conceal
one (a faded copy of the audio before it, then silence). The measure, step by step:

1. Energy (mean square) per 1 ms sub-block on both sides: the sent clip band-limited to what
   16 kHz audio can carry; the returned audio placed by its RTP position (so arrival jitter does
   not move it; packets that never arrived are silence).
2. Speech blocks: 20 ms blocks of the sent clip (one sent packet each) whose energy is above
   ``speech_level`` of the clip's 99th-percentile block energy. Utterances: runs of speech
   blocks less than ``utterance_gap_s`` apart.
3. Each sent utterance (with ``context_s`` of its surroundings) is looked for in the returned
   audio by cross-correlating 20 ms amplitude envelopes (5 ms steps, then 1 ms around the
   best): within ``track_s`` of the delay of the last utterances found (before any, of the
   delay at which the whole span correlates best), needing ``min_correlation``; else anywhere
   from 0 to ``max_delay_s``, needing ``min_correlation_anywhere``. Not found, it did not come
   back: all its speech blocks count 0. Noise correlates under 0.35; other words, as short as
   an utterance, can reach 0.5-0.8, hence the strict test away from the track.
4. Around that delay, for each 1 ms phase of a 20 ms block, a monotone, one-to-one pairing of
   sent with returned 20 ms blocks (dynamic programming, pairs up to ``max_shift_blocks``
   apart, a cost per block left unpaired inside it) follows 40 ms frames removed or silence
   inserted inside the utterance, so the rest still pairs with its own audio; the phase whose
   pairing matches best is kept (edits move audio by whole frames, so one phase fits every
   part, and 2.5 ms of misalignment alone would cost ~10 % of a block's energy at syllable
   edges).
5. A sent speech block counts the share of its energy that came back in its paired block
   (after the returned level is taken out: the median energy ratio of the utterance's blocks
   that came back at all; within ``codec_tolerance`` counts as all), at most 1, or 0 when
   unpaired; a returned block more than ``max_excess`` times louder counts in inverse
   proportion. So concealment counts no more than its faded energy (plus that tolerance), and
   noise in its place counts little.

Known limits (tests/test_soak_speech_back.py measures them): damage that cuts through 20 ms
blocks counts per block, so a block partly lost can count in full when its neighbour's audio
moved in (audio chopped every other 40 ms reads ~0.64, not 0.5); an utterance damaged past
recognition counts 0 (the measure errs low there: 20 % packet loss at the server of December
2026 read 0).

``fraction`` = the sum of those shares / the number of sent speech blocks measured.

Over 400 lines as one measure: utterances, placement by stretches, and the credit per block
are its steps, each used only here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

RATE_HZ = 48_000
SUB_SAMPLES = 48  # 1 ms: the alignment step
SUBS_PER_BLOCK = 20  # a 20 ms block, one packet of the client's audio
COARSE_SUBS = 5  # the first, coarse search steps 5 ms
OFF_ALIGNMENT_COST = 0.005  # per block that a pair lies off the utterance's alignment
GAP_COST = 0.5  # per block left unpaired inside a pairing (a pair's similarity is 0..1)
SUB_S = SUB_SAMPLES / RATE_HZ
BLOCK_S = SUBS_PER_BLOCK * SUB_S
# The server works at 16 kHz: nothing above 8 kHz can come back (its resamplers roll off
# before that), so the sent side is measured below this.
SERVER_BAND_HZ = 7_500.0
# Received frames whose arrival places the returned audio around each (2 s of 20 ms frames):
# far longer than arrival jitter, far shorter than the time between a stalled server's skips.
LOCAL_OFFSET_FRAMES = 101
# A move of the local median offset larger than this is a step (a skipped tick moves it 40 ms);
# smaller moves are arrival jitter and leave the placement alone.
STEP_S = 0.02


@dataclass(frozen=True)
class SpeechBackOptions:
    speech_level: float = 0.01  # of the clip's p99 block energy (-20 dB): above it, speech
    utterance_gap_s: float = 0.25
    context_s: float = 0.1  # sent audio around an utterance that takes part in its alignment
    max_delay_s: float = 1.0
    # The delay moves slowly (40 ms steps of the playout level, a jitter buffer growing): each
    # utterance is first looked for within track_s of the median delay of the last ones found,
    # where a correlation of min_correlation will do; anywhere else in 0..max_delay_s (the
    # first utterances, or after a jump) it takes min_correlation_anywhere.
    track_s: float = 0.25
    min_correlation: float = 0.4
    min_correlation_anywhere: float = 0.7
    # Before any utterance is found, the track is the delay at which the first run_span_s of
    # the span correlates best: over that many seconds, noise or other words correlate under
    # 0.1. (Longer would cost memory: lags x samples.)
    min_correlation_run: float = 0.3
    run_span_s: float = 20.0
    # Edits inside one utterance shift the rest of it: up to 500 ms either way in all.
    max_shift_blocks: int = 25
    # The server returns speech at its own level (about half the energy here: -3 dB).
    min_gain: float = 0.25
    max_gain: float = 4.0
    # Opus (twice) and the resamplers move a 20 ms block's energy by a few % either way (5th
    # percentile -8 %): a block back within this share either way counts in full.
    codec_tolerance: float = 0.1
    # A returned block louder than this many times its sent block is mostly something else
    # (noise, another word): it counts in inverse proportion. Up to it, a block that a 40 ms
    # edit cut through (part of one word, part of the next) still counts.
    max_excess: float = 2.0


def sub_block_energy(pcm: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> F64:
    """Mean square per 1 ms (48 samples) of mono audio: float in [-1, 1], or int16 (scaled by
    1/32768). A trailing partial sub-block is left out."""
    x = np.asarray(pcm, np.float64)
    if np.issubdtype(np.asarray(pcm).dtype, np.integer):
        x = x / 32768.0
    n = x.shape[0] // SUB_SAMPLES
    return np.asarray((x[: n * SUB_SAMPLES].reshape(n, SUB_SAMPLES) ** 2).mean(axis=1))


def band_limited(pcm_48k: npt.NDArray[np.floating], cutoff_hz: float = SERVER_BAND_HZ) -> F64:
    """``pcm_48k`` without its content above ``cutoff_hz`` (FFT, a 500 Hz cosine taper)."""
    x = np.asarray(pcm_48k, np.float64)
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.shape[0], 1.0 / RATE_HZ)
    taper_hz = 500.0
    gain = np.clip((cutoff_hz - f) / taper_hz, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    return np.asarray(np.fft.irfft(spectrum * gain, n=x.shape[0]))


@dataclass(frozen=True)
class ClipSpeech:
    """One loop of the sent clip, as the measure sees it.

    ``sub_energy``: per 1 ms, band-limited, 20 per packet (the clip is whole packets long);
    ``threshold``: block energy above which a 20 ms block is speech; ``utterances``: [start,
    end) in 20 ms blocks of the loop."""

    sub_energy: F64
    threshold: float
    utterances: tuple[tuple[int, int], ...]

    @property
    def blocks(self) -> int:
        return int(self.sub_energy.shape[0]) // SUBS_PER_BLOCK


def clip_speech(
    pcm_48k: npt.NDArray[np.floating], options: SpeechBackOptions | None = None
) -> ClipSpeech:
    """The speech of a clip of whole 20 ms packets (as the client track loops it)."""
    opts = options or SpeechBackOptions()
    sub = sub_block_energy(band_limited(pcm_48k))
    sub = sub[: sub.shape[0] // SUBS_PER_BLOCK * SUBS_PER_BLOCK]
    blocks = _blocks(sub)
    threshold = opts.speech_level * float(np.quantile(blocks, 0.99)) if blocks.size else 0.0
    speech = np.flatnonzero(blocks > threshold) if threshold > 0 else np.zeros(0, np.int64)
    gap_blocks = round(opts.utterance_gap_s / BLOCK_S)
    utterances: list[tuple[int, int]] = []
    for k in speech.tolist():
        if utterances and k - utterances[-1][1] < gap_blocks:
            utterances[-1] = (utterances[-1][0], k + 1)
        else:
            utterances.append((k, k + 1))
    return ClipSpeech(sub, threshold, tuple(utterances))


@dataclass(frozen=True)
class ReturnedAudio:
    """The returned audio on a regular 1 ms grid: ``sub_energy[q]`` covers the time
    ``start_s + q * SUB_S`` (0 where nothing arrived)."""

    start_s: float
    sub_energy: F64


def returned_audio(
    frame_at_s: F64,
    frame_pts: npt.NDArray[np.int64],
    sub_pos: npt.NDArray[np.int64],
    sub_energy: F64,
    window_frames: int = LOCAL_OFFSET_FRAMES,
) -> ReturnedAudio:
    """Place received sub-blocks by RTP position (48 kHz samples, ``sub_pos``), not by arrival,
    with one offset (arrival - position) per stretch of frames: a new stretch starts where the
    median offset of the ``window_frames`` frames around a frame moves more than
    ``STEP_S`` from the stretch's, and each stretch sits at its own median offset. Arrival
    jitter does not move the audio (not even by a millisecond inside an utterance), and a
    server that skips ticks (arrival minus position steps by 40 ms at each) does not drift the
    grid. The grid starts at the earliest placed sub-block."""
    if sub_pos.size == 0 or frame_at_s.size == 0:
        return ReturnedAudio(math.nan, np.zeros(0))
    order = np.argsort(frame_pts, kind="stable")
    pts = np.asarray(frame_pts, np.int64)[order]
    offset_s = _stretch_offsets(
        np.asarray(frame_at_s, np.float64)[order] - pts / RATE_HZ, window_frames
    )
    frame = np.clip(np.searchsorted(pts, sub_pos, side="right") - 1, 0, pts.size - 1)
    placed_s = sub_pos / RATE_HZ + offset_s[frame]
    start_s = float(placed_s.min())
    index = np.rint((placed_s - start_s) / SUB_S).astype(np.int64)
    grid = np.zeros(int(index.max()) + 1)
    grid[index] = sub_energy
    return ReturnedAudio(start_s, grid)


def _stretch_offsets(offset_s: F64, window: int) -> F64:
    """``offset_s`` made piecewise constant: stretches split where the local median moves more
    than ``STEP_S`` from the stretch's level, each at its own median."""
    local = _rolling_median(offset_s, window)
    bounds = [0]
    level = float(local[0])
    for k in range(1, local.shape[0]):
        if abs(float(local[k]) - level) > STEP_S:
            bounds.append(k)
            level = float(local[k])
    bounds.append(local.shape[0])
    out = np.empty_like(offset_s)
    for a, b in itertools.pairwise(bounds):
        out[a:b] = np.median(offset_s[a:b])
    return out


def _rolling_median(x: F64, window: int) -> F64:
    """The median of ``x`` over ``window`` values centred on each (fewer at the ends), computed
    in chunks so that hours of frames need little memory."""
    half = max(0, window // 2)
    padded = np.concatenate((np.full(half, np.nan), x, np.full(half, np.nan)))
    out = np.empty_like(x)
    chunk = 4096
    for k in range(0, x.shape[0], chunk):
        stop = min(x.shape[0], k + chunk)
        rows = np.lib.stride_tricks.sliding_window_view(padded[k : stop + 2 * half], 2 * half + 1)
        out[k:stop] = np.nanmedian(rows, axis=1)
    return out


@dataclass(frozen=True)
class SpeechBack:
    """How much of the sent speech came back, overall and per utterance (in sending order)."""

    fraction: float  # NaN when no utterance was measured
    speech_blocks: int
    returned_blocks: float
    utterance_at_s: F64  # send time of each measured utterance's first speech block
    utterance_fraction: F64
    utterance_delay_s: F64  # from sending to its return (NaN: not found)

    @property
    def utterances(self) -> int:
        return int(self.utterance_at_s.size)

    @property
    def utterances_found(self) -> int:
        return int(np.isfinite(self.utterance_delay_s).sum())


def speech_back(
    clip: ClipSpeech,
    sent_at_s: F64,
    returned: ReturnedAudio,
    start_s: float,
    end_s: float,
    options: SpeechBackOptions | None = None,
) -> SpeechBack:
    """The measure over the utterances sent from ``start_s`` whose return (up to
    ``max_delay_s`` later) falls before ``end_s``. ``sent_at_s[k]``: when the client sent its
    packet k, which carried packet ``k % clip.blocks`` of the clip."""
    opts = options or SpeechBackOptions()
    period = clip.blocks
    context = round(opts.context_s / BLOCK_S)
    run_delay_s = _run_delay_s(clip, sent_at_s, returned, start_s, end_s, opts)
    at_s: list[float] = []
    fractions: list[float] = []
    delays: list[float] = []
    speech_total, returned_total = 0, 0.0
    for loop_start in range(0, sent_at_s.shape[0], period) if period else ():
        for a, b in clip.utterances:
            first, stop = loop_start + a - context, loop_start + b + context
            if first < 0 or stop > sent_at_s.shape[0]:
                continue
            t0 = float(sent_at_s[first])
            window_s = (stop - first) * BLOCK_S
            if t0 < start_s or t0 + window_s + opts.max_delay_s > end_s:
                continue
            sent = np.concatenate(
                [clip.sub_energy[_block_subs(n % period)] for n in range(first, stop)]
            )
            found = [d for d in delays if math.isfinite(d)][-3:]
            track = float(np.median(found)) if found else run_delay_s
            speech_blocks, credit, delay_s = _one_utterance(
                sent, t0, clip.threshold, returned, track, opts
            )
            at_s.append(float(sent_at_s[loop_start + a]))
            fractions.append(credit / speech_blocks if speech_blocks else math.nan)
            delays.append(delay_s)
            speech_total += speech_blocks
            returned_total += credit
    return SpeechBack(
        fraction=returned_total / speech_total if speech_total else math.nan,
        speech_blocks=speech_total,
        returned_blocks=returned_total,
        utterance_at_s=np.asarray(at_s, np.float64),
        utterance_fraction=np.asarray(fractions, np.float64),
        utterance_delay_s=np.asarray(delays, np.float64),
    )


def _level(ratios: F64, opts: SpeechBackOptions) -> float:
    """The returned audio's level against the sent: the median energy ratio of the speech
    blocks that came back at all (a tenth of their energy or more: losses must not lower it),
    within [min_gain, max_gain]; 1 when none did."""
    back = ratios[ratios >= 0.1]
    return float(np.clip(np.median(back), opts.min_gain, opts.max_gain)) if back.size else 1.0


def _run_delay_s(
    clip: ClipSpeech,
    sent_at_s: F64,
    returned: ReturnedAudio,
    start_s: float,
    end_s: float,
    opts: SpeechBackOptions,
) -> float | None:
    """The delay at which what was sent in the first ``run_span_s`` from ``start_s`` correlates
    best with the returned audio (None under ``min_correlation_run``): where the first
    utterances are looked for."""
    period = clip.blocks
    stop_s = min(end_s - opts.max_delay_s, start_s + opts.run_span_s)
    sent_index = np.flatnonzero((sent_at_s >= start_s) & (sent_at_s < stop_s))
    if not period or sent_index.size < 2 or not math.isfinite(returned.start_s):
        return None
    first = int(sent_index[0])
    sent = np.concatenate([clip.sub_energy[_block_subs(int(n) % period)] for n in sent_index])
    t0_s = float(sent_at_s[first])
    q0 = round((t0_s - returned.start_s) / SUB_S)
    lags = round(opts.max_delay_s / SUB_S)
    recv = _slice(returned.sub_energy, q0, q0 + lags + sent.shape[0] + SUBS_PER_BLOCK)
    lag = _best_lag(_envelope(sent), _envelope(recv), 0, lags, opts.min_correlation_run)
    return None if lag < 0 else returned.start_s + (q0 + lag) * SUB_S - t0_s


def _block_subs(block: int) -> slice:
    return slice(block * SUBS_PER_BLOCK, (block + 1) * SUBS_PER_BLOCK)


def _blocks(sub: F64) -> F64:
    n = sub.shape[0] // SUBS_PER_BLOCK
    return np.asarray(sub[: n * SUBS_PER_BLOCK].reshape(n, SUBS_PER_BLOCK).mean(axis=1))


def _one_utterance(
    sent_sub: F64,
    t0_s: float,
    threshold: float,
    returned: ReturnedAudio,
    track_s: float | None,
    opts: SpeechBackOptions,
) -> tuple[int, float, float]:
    """(speech blocks, energy share returned, delay s) of one utterance and its context."""
    sent_blocks = _blocks(sent_sub)
    speech = sent_blocks > threshold
    n_speech = int(speech.sum())
    if n_speech == 0 or not math.isfinite(returned.start_s):
        return n_speech, 0.0, math.nan
    lags = round(opts.max_delay_s / SUB_S)
    q0 = round((t0_s - returned.start_s) / SUB_S)
    width = sent_sub.shape[0]
    margin = opts.max_shift_blocks * SUBS_PER_BLOCK
    recv = _slice(returned.sub_energy, q0 - margin, q0 + lags + width + margin + SUBS_PER_BLOCK)
    x = _envelope(sent_sub)
    y = _envelope(recv[margin:])
    lag = -1
    if track_s is not None:
        near = round(track_s / SUB_S)
        half = round(opts.track_s / SUB_S)
        lag = _best_lag(x, y, max(0, near - half), min(lags, near + half), opts.min_correlation)
    if lag < 0:
        lag = _best_lag(x, y, 0, lags, opts.min_correlation_anywhere)
    if lag < 0:
        return n_speech, 0.0, math.nan
    # The block pairing, at every 1 ms phase of a 20 ms block around that lag: edits inside
    # the utterance move its parts by whole blocks (40 ms frames), so one phase fits them all,
    # while the lag of the whole utterance may fall between its parts.
    shift = opts.max_shift_blocks
    phases = np.arange(-SUBS_PER_BLOCK // 2, SUBS_PER_BLOCK // 2)
    starts = np.clip(lag + phases, 0, None)
    got = np.stack([_blocks(recv[a : a + width + 2 * margin]) for a in starts])
    ratios = got[:, shift : shift + sent_blocks.shape[0]][:, speech] / sent_blocks[speech]
    gain = np.asarray([_level(r, opts) for r in ratios])
    got = got / gain[:, None]
    best, pairs = _pair(sent_blocks, got, shift, 0.25 * threshold)
    delay_s = returned.start_s + (q0 + int(starts[best])) * SUB_S - t0_s
    credit = 0.0
    within = 1.0 - opts.codec_tolerance
    for i, j in pairs:
        if speech[i]:
            ratio = float(got[best, j] / sent_blocks[i])
            credit += min(1.0, ratio / within, opts.max_excess / ratio) if ratio > 0 else 0.0
    return n_speech, credit, delay_s


def _best_lag(x: F64, y: F64, lo: int, hi: int, min_correlation: float) -> int:
    """The lag in [lo, hi] (1 ms steps) at which ``y`` correlates best with ``x``: searched in
    5 ms steps, then in 1 ms steps around the best; -1 when under ``min_correlation``."""
    coarse = _correlations(x, y, range(lo, hi + 1, COARSE_SUBS))
    best = lo + int(np.argmax(coarse)) * COARSE_SUBS
    fine_lags = range(max(lo, best - COARSE_SUBS + 1), min(hi, best + COARSE_SUBS - 1) + 1)
    fine = _correlations(x, y, fine_lags)
    if float(fine.max()) < min_correlation:
        return -1
    return fine_lags[int(np.argmax(fine))]


def _envelope(sub: F64) -> F64:
    """Amplitude over a sliding 20 ms: what a block sees, without the voice's pitch ripple (a
    1 ms envelope correlates best a pitch period off when the codec moves the harmonics)."""
    kernel = np.full(SUBS_PER_BLOCK, 1.0 / SUBS_PER_BLOCK)
    return np.sqrt(np.convolve(sub, kernel, mode="same"))


def _correlations(x: F64, y: F64, lags: range) -> F64:
    """Pearson correlation of ``x`` with ``y[lag : lag + len(x)]`` for each lag (0 where
    either is constant)."""
    windows = np.lib.stride_tricks.sliding_window_view(y, x.shape[0])[
        lags.start : lags.stop : lags.step
    ]
    xc = x - x.mean()
    yc = windows - windows.mean(axis=1, keepdims=True)
    norm = np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=1))
    return np.where(norm > 0, yc @ xc / np.where(norm > 0, norm, 1.0), 0.0)


def _pair(sent: F64, got: F64, shift: int, floor: float) -> tuple[int, list[tuple[int, int]]]:
    """The best of the candidate alignments ``got`` (one row each) and its pairing.

    A pairing is monotone and one-to-one between ``sent`` blocks and a row's blocks
    (``got[r, j]`` sits at ``sent[j - shift]``; pairs at most ``shift`` away). It maximises the
    summed similarity of its pairs, min / max of the two energies (``floor`` added to both, so
    that silences match), less ``GAP_COST`` per block left unpaired inside it (a sent block lost
    or a returned one inserted: returned blocks before the first pair and after the last are
    free) and ``OFF_ALIGNMENT_COST`` per block a pair lies off the alignment. So a 40 ms frame
    dropped or inserted costs once and the rest pairs with its own audio again, while pairing
    around every hole to borrow a neighbour's energy does not pay. Returns (row, [(sent index,
    got index)])."""
    n, m = sent.shape[0], got.shape[1]
    offset = np.abs(np.arange(m)[None, :] - shift - np.arange(n)[:, None])
    lo = np.minimum(sent[None, :, None], got[:, None, :]) + floor
    hi = np.maximum(sent[None, :, None], got[:, None, :]) + floor
    similarity = np.where(offset <= shift, lo / hi - OFF_ALIGNMENT_COST * offset, -np.inf)
    rows = got.shape[0]
    ramp = GAP_COST * np.arange(m + 1)
    score = np.zeros((n + 1, rows, m + 1))  # row 0: returned blocks before the first pair, free
    for i in range(1, n + 1):
        best = score[i - 1] - GAP_COST  # sent block i-1 unpaired (lost)
        best[:, 1:] = np.maximum(best[:, 1:], score[i - 1, :, :-1] + similarity[:, i - 1])
        # a returned block unpaired (inserted): score[i, j - 1] - GAP_COST, as a running max
        score[i] = np.maximum.accumulate(best + ramp, axis=1) - ramp
    end = score[n]  # returned blocks after the last pair, free
    row, last = (int(k) for k in np.unravel_index(int(np.argmax(end)), end.shape))
    s = score[:, row, :]
    pairs: list[tuple[int, int]] = []
    i, j = n, last
    while i > 0 and j > 0:
        if s[i, j] == s[i, j - 1] - GAP_COST:
            j -= 1
        elif s[i, j] == s[i - 1, j] - GAP_COST:
            i -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return row, pairs[::-1]


def _slice(grid: F64, a: int, b: int) -> F64:
    """``grid[a:b]`` with zeros where it lies outside the grid."""
    out = np.zeros(b - a)
    lo, hi = max(a, 0), min(b, grid.shape[0])
    if hi > lo:
        out[lo - a : hi - a] = grid[lo:hi]
    return out
