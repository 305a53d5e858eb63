"""Run code in an interpreter that has this one's packages but none of its site hooks.

"Our code does not load module X" can only be measured where nothing else has loaded it:
a site `.pth` file runs at every startup and may import anything (one that loads certifi
brings importlib.resources, zipfile, shutil and lzma with it). `-S` skips site
processing; the project and its dependencies stay importable from the directories this
interpreter found them in, and no `.pth` file in them is executed.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import xcr0tool


def run_bare(code: str) -> str:
    """Run `code` under `python -S` with this interpreter's import paths; its stdout."""
    paths = [str(Path(xcr0tool.__file__).resolve().parent.parent), *site.getsitepackages()]
    prelude = f"import sys; sys.path[:0] = {paths!r}\n"
    result = subprocess.run(
        [sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True, check=True
    )
    return result.stdout
