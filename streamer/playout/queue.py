"""Paced playout of pushed audio: the pure, synchronous half of a channel.

A channel's driver pushes 16 kHz mono audio in *segments* (an utterance, a file) at any speed:
text-to-speech pushes faster than real time. :class:`PlayoutQueue` holds it, bounded in
seconds (a push beyond the bound is refused with :class:`AudioQueueFullError`, never dropped
silently). :class:`ChannelPipeline` is a :class:`SessionPipeline` that, at each scheduler tick,
takes exactly one frame (40 ms) from its queue (silence when it is empty) before deciding the
tick's frame: the scheduler's tick is the only clock, so queued audio plays at real time.

A live driver (a microphone, a publishing call page) is not queued: its frames go into the
pipeline as they arrive, with their media timestamps, and the adaptive playout buffer paces
them exactly as it does a call's (:meth:`ChannelPipeline.set_live`).

Playback events are reported when the audio actually leaves with a frame (not when it enters
the pipeline, ~4 frames earlier): ``playback_started`` when a segment's first sample is
released to viewers, ``playback_finished`` when its last one is (or when it is interrupted,
with the position reached). Positions are seconds of the segment's own audio released.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.errors import StreamerError
from streamer.playout.pipeline import INPUT_RATE_HZ, FrameJob, PipelineConfig, SessionPipeline

F32 = npt.NDArray[np.float32]


class AudioQueueFullError(StreamerError):
    """A push that would hold more queued audio than the channel's bound."""

    code = "queue_full"
    status = 413


@dataclass(frozen=True)
class PlayoutConfig:
    # Queued audio beyond this is refused (the push raises), never dropped.
    max_queued_s: float = 120.0
    # A segment starts playing once this much of it is queued (or it is complete), so a
    # driver streaming in small real-time chunks does not underflow at every tick.
    prebuffer_s: float = 0.06


@dataclass(frozen=True, kw_only=True)
class PlaybackEvent:
    kind: Literal["playback_started", "playback_finished"]
    segment_id: int
    position_s: float  # seconds of the segment's audio released to viewers
    interrupted: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.kind, "segment_id": self.segment_id}
        if self.kind == "playback_finished":
            out["position_s"] = round(self.position_s, 4)
            out["interrupted"] = self.interrupted
        return out


@dataclass
class _Segment:
    segment_id: int
    chunks: collections.deque[F32] = field(default_factory=collections.deque)
    queued: int = 0  # samples pushed and not yet taken
    total: int = 0  # samples pushed so far
    taken: int = 0
    released: int = 0
    closed: bool = False
    started: bool = False


@dataclass
class PlayoutStats:
    samples_pushed: int = 0
    samples_played: int = 0
    refused_pushes: int = 0
    interrupts: int = 0


class PlayoutQueue:
    """Segments of 16 kHz mono float32 audio waiting to be played. Synchronous; one owner.

    Bounded by ``max_queued_s`` of audio in total (refuses beyond it). ``take(n)`` returns
    exactly ``n`` samples, silence where nothing is ready, and which segments they came from.
    """

    def __init__(self, config: PlayoutConfig | None = None) -> None:
        self.config = config or PlayoutConfig()
        self._max_samples = int(self.config.max_queued_s * INPUT_RATE_HZ)
        self._prebuffer = int(self.config.prebuffer_s * INPUT_RATE_HZ)
        self._segments: collections.deque[_Segment] = collections.deque()
        self._next_id = 1
        self._playing = False  # False after an underflow: wait for the prebuffer again
        self._queued = 0  # samples queued in all segments
        self.stats = PlayoutStats()

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def queued_s(self) -> float:
        return self.queued_samples / INPUT_RATE_HZ

    def _open_segment(self) -> _Segment:
        if not self._segments or self._segments[-1].closed:
            self._segments.append(_Segment(self._next_id))
            self._next_id += 1
        return self._segments[-1]

    def push(self, samples_16k: F32) -> int:
        """Append to the open segment (opening one); returns its id. Raises AudioQueueFullError."""
        samples = np.asarray(samples_16k, np.float32).reshape(-1)
        if self.queued_samples + samples.shape[0] > self._max_samples:
            self.stats.refused_pushes += 1
            raise AudioQueueFullError(
                f"The channel already holds {self.queued_s:.1f} s of audio; its limit is "
                f"{self.config.max_queued_s:g} s. Wait for playback to catch up."
            )
        seg = self._open_segment()
        if samples.shape[0]:
            seg.chunks.append(samples.copy())
            seg.queued += samples.shape[0]
            self._queued += samples.shape[0]
            seg.total += samples.shape[0]
            self.stats.samples_pushed += samples.shape[0]
        return seg.segment_id

    def end_segment(self) -> int | None:
        """Close the open segment; returns its id, or None when there was none (or it was empty)."""
        if not self._segments or self._segments[-1].closed:
            return None
        seg = self._segments[-1]
        if seg.total == 0:
            self._segments.pop()
            return None
        seg.closed = True
        return seg.segment_id

    def take(self, n: int) -> tuple[F32, list[tuple[_Segment, int, int]]]:
        """Exactly ``n`` samples: queued audio in order, then silence.

        Also returns ``(segment, offset in the output, count)`` for each piece taken.
        """
        out = np.zeros(n, np.float32)
        pieces: list[tuple[_Segment, int, int]] = []
        if not self._playing:
            head = self._segments[0] if self._segments else None
            if head is None or (self._queued < self._prebuffer and not head.closed):
                return out, pieces
            self._playing = True
        pos = 0
        for seg in self._segments:
            while seg.chunks and pos < n:
                chunk = seg.chunks[0]
                k = min(n - pos, chunk.shape[0])
                out[pos : pos + k] = chunk[:k]
                if k == chunk.shape[0]:
                    seg.chunks.popleft()
                else:
                    seg.chunks[0] = chunk[k:]
                seg.queued -= k
                self._queued -= k
                seg.taken += k
                pieces.append((seg, pos, k))
                pos += k
            if pos >= n or not seg.closed:
                break
        if pos < n:
            self._playing = False  # underflow: rebuild the prebuffer before resuming
        self.stats.samples_played += pos
        return out, pieces

    def pop_finished_taking(self) -> list[_Segment]:
        """Remove and return closed segments whose every sample has been taken."""
        done = []
        while self._segments and self._segments[0].closed and self._segments[0].queued == 0:
            done.append(self._segments.popleft())
        return done

    def clear(self) -> list[_Segment]:
        """Drop everything queued; returns the segments that were waiting or playing."""
        dropped = list(self._segments)
        self._segments.clear()
        self._queued = 0
        self._playing = False
        return dropped


class ChannelPipeline(SessionPipeline):
    """A pipeline fed from a :class:`PlayoutQueue`, one frame per tick, with playback events;
    or, while a live driver holds the channel, from that driver's frames (:meth:`set_live`).

    Synchronous; one owner (the event loop). In queue mode ``next_job`` takes the tick's 40 ms
    from the queue, pushes it, decides the frame, and records which segment audio that frame
    released.
    """

    def __init__(
        self,
        avatar_frame_count: int,
        config: PipelineConfig | None = None,
        playout: PlayoutConfig | None = None,
    ) -> None:
        super().__init__(avatar_frame_count, config, adaptive=False)
        self.playout = PlayoutQueue(playout)
        self._live = False
        # (first input sample index, count, segment) of segment audio taken but not yet
        # released; a handful of entries (the ~4-frame lookahead), emptied as frames leave.
        self._in_flight: collections.deque[tuple[int, int, _Segment]] = collections.deque()
        # Segments taken from the queue whose end has not been released yet.
        self._active: dict[int, _Segment] = {}
        # Events waiting for the shell to send; drained every tick by `take_events`.
        self._events: list[PlaybackEvent] = []

    @property
    def live(self) -> bool:
        return self._live

    def set_live(self, live: bool) -> None:
        """Switch between the queue (pushed segments, played at the tick) and a live driver
        (timestamped frames through the adaptive playout buffer); timing starts over."""
        if live != self._live:
            self._live = live
            self.set_source(adaptive=live)

    def next_job(self, now_s: float) -> FrameJob:
        spf = self.config.samples_per_frame
        if not self._live:
            samples, pieces = self.playout.take(spf)
            fed = self.input_samples
            for seg, offset, count in pieces:
                self._in_flight.append((fed + offset, count, seg))
                self._active.setdefault(seg.segment_id, seg)
            for seg in self.playout.pop_finished_taking():
                self._active.setdefault(seg.segment_id, seg)
            self.push_pcm_16k(samples, now_s)
        job = super().next_job(now_s)
        if job.input_frame is not None:
            self._release_until((job.input_frame + 1) * spf)
        return job

    def _release_until(self, sample_index: int) -> None:
        while self._in_flight and self._in_flight[0][0] < sample_index:
            start, count, seg = self._in_flight[0]
            k = min(count, sample_index - start)
            if not seg.started:
                seg.started = True
                self._events.append(
                    PlaybackEvent(
                        kind="playback_started", segment_id=seg.segment_id, position_s=0.0
                    )
                )
            seg.released += k
            if k == count:
                self._in_flight.popleft()
            else:
                self._in_flight[0] = (start + k, count - k, seg)
        for seg in list(self._active.values()):
            if seg.closed and seg.queued == 0 and seg.released >= seg.total:
                del self._active[seg.segment_id]
                self._events.append(
                    PlaybackEvent(
                        kind="playback_finished",
                        segment_id=seg.segment_id,
                        position_s=seg.released / INPUT_RATE_HZ,
                    )
                )

    def interrupt(self) -> int:
        """Drop every queued and in-flight sample, put the mouth at rest at once, and report
        each unfinished segment as finished (interrupted) at the position it reached."""
        released = super().interrupt()
        self._release_until(released)
        self.playout.stats.interrupts += 1
        pending = {seg.segment_id: seg for seg in self._active.values()}
        for seg in self.playout.clear():
            pending.setdefault(seg.segment_id, seg)
        for seg_id in sorted(pending):
            seg = pending[seg_id]
            self._events.append(
                PlaybackEvent(
                    kind="playback_finished",
                    segment_id=seg_id,
                    position_s=seg.released / INPUT_RATE_HZ,
                    interrupted=True,
                )
            )
        self._active.clear()
        self._in_flight.clear()
        return released

    @property
    def has_pending_audio(self) -> bool:
        """Whether pushed audio is queued, or taken and not yet released to viewers."""
        return self.playout.queued_samples > 0 or bool(self._active) or bool(self._in_flight)

    def take_events(self) -> list[PlaybackEvent]:
        events, self._events = self._events, []
        return events
