"""PNG plots of a soak report's series over time (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamer.errors import StreamerError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise StreamerError(
            "the soak plots need matplotlib: pip install 'avatar-streamer[soak]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _nums(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per series family; returns the paths written."""
    plt = _pyplot()
    th = report["thresholds"]
    peers: dict[str, dict[str, list[Any]]] = report["series"]["peers"]
    server: dict[str, list[Any]] = report["series"]["server"]
    written: list[Path] = []

    def per_peer(name: str, x: str, y: str, title: str, ylabel: str, limits: list[float]) -> None:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for peer, s in peers.items():
            style = "." if name in ("frame_gaps", "mouth_to_lips") else "-"
            ax.plot(s[x], _nums(s[y]), style, label=peer, markersize=3)
        for limit in limits:
            ax.axhline(limit, color="red", linestyle="--", linewidth=1)
        ax.set(title=title, xlabel="time since start (s)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    per_peer("fps", "fps_t_s", "fps", "Frames per second per peer", "fps", [th["min_fps"]])
    per_peer(
        "frame_gaps", "gap_t_s", "gap_ms", "Inter-frame gaps at the peers", "gap (ms)", [150.0]
    )
    lim = th["max_av_offset_ms"]
    per_peer(
        "av_offset",
        "av_t_s",
        "av_offset_ms",
        "A/V offset (mouth motion vs returned audio; + = video late)",
        "offset (ms)",
        [-lim, lim],
    )
    per_peer(
        "mouth_to_lips",
        "mouth_to_lips_t_s",
        "mouth_to_lips_ms",
        "Mouth-to-lips latency (speech onset sent -> mouth opens on screen)",
        "latency (ms)",
        [],
    )

    t = server["t_s"]
    panels = [
        ("frame_latency_p99_ms", "frame latency p99 (ms)", th["max_p99_latency_ms"]),
        ("input_frames_dropped", "input frames dropped (cumulative)", None),
        ("late_ticks", "late ticks (cumulative)", None),
        ("audio_underruns", "audio underruns (cumulative)", None),
        ("rss_mb", "RSS (MB)", None),
        ("open_fds", "open file descriptors", None),
        ("threads", "threads", None),
        ("asyncio_tasks", "asyncio tasks", None),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(11, 10), sharex=True)
    for ax, (key, label, limit) in zip(axes.flat, panels, strict=True):
        ax.plot(t, _nums(server[key]), "-", marker=".", markersize=3)
        if limit is not None:
            ax.axhline(limit, color="red", linestyle="--", linewidth=1)
        ax.set_title(label, fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("time since start (s)")
    fig.suptitle("Server, scraped from /metrics")
    fig.tight_layout()
    path = out_dir / "server.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    written.append(_target_delay(plt, t, server.get("playout_target_delay_ms", []), out_dir))
    return written


def _target_delay(
    plt: Any, t: list[float], per_sink: list[dict[str, float]], out_dir: Path
) -> Path:
    """The playout target delay at each scrape: min, mean and max across the server's sinks
    (one line per sink would be one per session, and sessions come and go)."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    scraped = [(x, list(d.values())) for x, d in zip(t, per_sink, strict=True) if d]
    if scraped:
        x = [x for x, _ in scraped]
        lo = [min(v) for _, v in scraped]
        hi = [max(v) for _, v in scraped]
        ax.fill_between(x, lo, hi, alpha=0.25, label="min-max across sinks")
        ax.plot(x, [sum(v) / len(v) for _, v in scraped], "-", marker=".", label="mean")
        ax.legend(loc="best", fontsize="small")
    else:
        note = "avatar_playout_target_delay_seconds: not exported by this server"
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
    ax.set(
        title="Playout target delay: min / mean / max across the server's sinks",
        xlabel="time since start (s)",
        ylabel="target delay (ms)",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "playout_target_delay.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
