"""The program: `python -m xcr0tool`, and the `xcr0tool` command (pyproject's script).

What the program loads (click, the command line, a command's modules) lives until the
process ends and makes next to no garbage; yet the garbage collector, which runs by
counting allocations, walks it again and again while it loads, and once more, whole, at
interpreter shutdown: some 15 ms of a small decode's 70 here. So the collector sits out
the loading of click and the command line, and what is loaded is put out of its sight
(gc.freeze) then, and again when the command is done. The collector runs as usual while
the command works; shutdown still releases and finalizes what no cycle holds and flushes
stdout and stderr, and a command's inputs and outputs are closed by their `with` blocks
before it returns. Code that runs the command line in its own process and goes on (the
tests, with run(ARGS) or xcr0tool.cli.main.main(ARGS)) keeps its collector as it was.
"""

from __future__ import annotations

import gc


def run(argv: list[str] | None = None) -> None:
    """The command line of sys.argv, as the program: the process ends after it. With
    `argv`, only that command line, for a caller that goes on running."""
    if argv is not None:
        from xcr0tool.cli.main import main

        main(argv)
        return
    gc.disable()
    from xcr0tool.cli.main import main

    gc.freeze()
    gc.enable()
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
