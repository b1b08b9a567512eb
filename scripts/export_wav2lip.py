"""Export a Wav2Lip (or Wav2Lip-GAN) generator checkpoint to ONNX, verified against PyTorch.

Usage: python scripts/export_wav2lip.py CHECKPOINT -o models/wav2lip.onnx
Needs PyTorch (pip install "avatar-streamer[export]"). Nothing is written unless the ONNX
model's output matches PyTorch's within 1e-4 on random inputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.errors import StreamerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="wav2lip.pth / wav2lip_gan.pth")
    parser.add_argument("-o", "--output", type=Path, default=Path("models/wav2lip.onnx"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from streamer.engine.wav2lip import export_checkpoint
    except ImportError:
        print(
            "export_wav2lip: PyTorch is needed: pip install 'avatar-streamer[export]'",
            file=sys.stderr,
        )
        return 2
    try:
        diff = export_checkpoint(args.checkpoint, args.output)
    except StreamerError as exc:
        print(f"export_wav2lip: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: parity with PyTorch, max abs diff {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
