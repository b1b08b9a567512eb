"""Every setting of a server, in one place: built by ``serve``/``live`` from their flags, by
tests directly. Frozen; nothing reads the environment here (see the commands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streamer.playout.pipeline import PipelineConfig
from streamer.playout.queue import PlayoutConfig
from streamer.resources import web_dir
from streamer.server.http.access import AccessConfig
from streamer.server.media.ice import TurnConfig


@dataclass(frozen=True)
class ChannelConfig:
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    max_channels: int = 16
    max_viewers_per_channel: int = 32
    max_viewers_total: int = 64  # over all channels: each viewer costs an encode per frame
    # Viewers, drivers and speak requests create a missing channel (with the default avatar);
    # when False they answer 404 and channels exist only through POST /channels.
    create_on_first_use: bool = True
    max_upload_bytes: int = 32 * 1024 * 1024
    max_ws_message_bytes: int = 1024 * 1024
    # Events waiting to be sent to a slow driver: beyond this the oldest is dropped (logged).
    max_pending_events: int = 256
    # A channel with no viewer, no driver and no queued audio for this long is deleted (its
    # frames cost CPU for no one); None keeps idle channels forever.
    idle_timeout_s: float | None = 600.0


@dataclass(frozen=True)
class RenderConfig:
    """Offline renders served next to live calls (``POST /render``)."""

    max_upload_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 600.0
    sync_max_duration_s: float = 10.0  # longer inputs get a job id
    chunk_frames: int = 2  # frames per background model call (a tick waits at most this long)
    idle_chunk_frames: int = 32  # ... while no session is live (a joining one waits once)
    max_jobs: int = 4  # waiting + running
    keep_results: int = 8  # finished jobs kept with their files
    encoder_threads: int = 1
    retry_after_s: int = 10


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    avatar: str = "default"
    max_sessions: int = 8
    video_codec: str = "vp8"  # or "h264"
    video_bitrate_bps: int | None = None
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs; none on a LAN or loopback
    max_body_bytes: int = 256 * 1024
    connect_timeout_s: float = 15.0
    # A call whose peer has sent no audio for this long is closed (None: never). A browser
    # sends packets even when muted, so silence on the wire means a broken or hostile peer.
    session_idle_timeout_s: float | None = 60.0
    retry_after_s: int = 5  # told with every 503 that does not say its own
    farewell_timeout_s: float = 0.5  # at shutdown, to send viewers their last frame
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    channels: ChannelConfig = field(default_factory=ChannelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    web_root: Path = field(default_factory=web_dir)  # the pages: see streamer.resources
    access: AccessConfig = field(default_factory=AccessConfig)  # token, viewers, CORS
    turn: TurnConfig | None = None  # TURN for the pages (GET /ice-servers) and the server's peers
