"""Write the built-in lip-sync model to models/builtin.onnx (deterministic; CI regenerates it).

Usage: python scripts/build_builtin_model.py [-o models/builtin.onnx] [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.engine.builtin import builtin_model_bytes, default_builtin_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=default_builtin_path())
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the generator's output"
    )
    args = parser.parse_args()
    data = builtin_model_bytes()
    if args.check:
        same = args.output.is_file() and args.output.read_bytes() == data
        print(f"{args.output}: {'up to date' if same else 'OUT OF DATE: rerun without --check'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
