"""Write the contact sheet of an avatar (default: the default one) to docs/images/.

    PYTHONPATH=. python scripts/avatar_contact_sheet.py [--name default] [--root AVATARS]
        [--out docs/images/avatar-default.png] [--frame 0]

Prepares the default avatar first if its cache is missing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from streamer.avatar import ensure_default_avatar, load_avatar
from streamer.avatar.sheet import render_contact_sheet
from streamer.resources import add_avatars_dir_argument, avatars_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="default")
    add_avatars_dir_argument(parser, "--root")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--frame", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = avatars_dir(args.avatars_dir)
    avatar = ensure_default_avatar(root) if args.name == "default" else load_avatar(args.name, root)
    out = args.out or Path("docs/images") / f"avatar-{args.name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(out), render_contact_sheet(avatar, args.frame), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
