"""Export MuseTalk v1.5 to an ONNX model folder, every graph checked against PyTorch.

Usage:
    python scripts/export_musetalk.py --checkpoint MODELS_DIR --out models/musetalk
    python scripts/export_musetalk.py --random-weights --size tiny --out /tmp/musetalk-tiny

MODELS_DIR is the ``models/`` folder upstream's download_weights.sh fills:
``musetalkV15/{musetalk.json,unet.pth}``, ``sd-vae/`` and ``whisper/``. Needs the ``export``
extra (pip install "avatar-streamer[export]"). Nothing loads from the folder unless every
graph matched PyTorch: the manifest is written last.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.errors import StreamerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="upstream's models/ folder")
    source.add_argument(
        "--random-weights", action="store_true", help="the real architectures, random weights"
    )
    parser.add_argument(
        "--size",
        choices=("tiny", "full"),
        default="tiny",
        help="with --random-weights: narrow test channels or the real size",
    )
    parser.add_argument("--seed", type=int, default=0, help="with --random-weights")
    parser.add_argument("--out", type=Path, default=Path("models/musetalk"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from streamer.engine.musetalk import export
    except ImportError as exc:
        print(
            f"export_musetalk: {exc.name} is needed: pip install 'avatar-streamer[export]'",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    try:
        if args.checkpoint is not None:
            models = export.load_checkpoint(args.checkpoint)
            name = "musetalk-v1.5"
        else:
            models = export.random_models(args.size, args.seed)
            name = f"musetalk-random-{args.size}"
        manifest = export.write_model_folder(models, args.out, name)
    except StreamerError as exc:
        print(f"export_musetalk: {exc}", file=sys.stderr)
        return 1
    worst = ", ".join(f"{k} {v:.1e}" for k, v in manifest.parity.items())
    print(f"wrote {args.out} ({name}) in {time.monotonic() - started:.0f} s; parity: {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
