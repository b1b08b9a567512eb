"""Write benchmark figures into ``docs/benchmarks.md``, one marked section per benchmark.

The report is the development clone's ``docs/benchmarks.md`` (see :mod:`streamer.resources`),
never a path in the working directory; an installed package has no report and only prints.

Each benchmark owns the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
rewriting one section leaves the others as they were. Every section states the machine and the
date it was measured on and the command that measured it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import re
from pathlib import Path

from streamer.resources import Layout, locate

log = logging.getLogger(__name__)

_HEADER = (
    "# Benchmarks\n\n"
    "Figures measured by commands in this repository. Each section names its command, the machine\n"
    "and the date; rerun the command to refresh it. Compare figures only within one section: they\n"
    "were measured side by side in one run, on noisy shared machines.\n"
)


def machine_description() -> str:
    """One line naming the CPU, core count and Python, e.g. for a benchmark header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def default_report() -> Path | None:
    """The development clone's ``docs/benchmarks.md``; None for an installed package."""
    found = locate()
    if found.layout is not Layout.CHECKOUT:
        return None
    return found.package_dir.parent / "docs" / "benchmarks.md"


def write_section(name: str, title: str, command: str, body: str, path: Path | None = None) -> None:
    """Replace (or append) the section ``name`` of the report at ``path`` (default:
    :func:`default_report`; nothing is written, and that is logged, when there is none)."""
    path = path or default_report()
    if path is None:
        log.info("not recorded: docs/benchmarks.md belongs to a development clone")
        return
    today = dt.date.today().isoformat()
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMachine: {machine_description()}  \nDate: {today}\n\n"
        f"{body.rstrip()}\n<!-- /bench:{name} -->\n"
    )
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n?", re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
