"""Shell completion as a user meets it: bash, zsh and fish, each running a completion
script (the one click generates now, and the one shipped in completions/) in a real shell,
pressing TAB on command lines in a directory of known files.

The scripts ask the program what to offer (click's protocol, which click may change from
one version to the next): what counts is what each shell then offers, not the script's
bytes. A shipped script that offers something else than a freshly generated one is out
of date. Each shell is skipped, with the reason, where it is not installed.

bash and zsh are driven through a pseudo-terminal: the line is typed, TAB pressed, and a
key bound to a widget of our own prints the edited line (bash `bind -x`, a zle widget);
bash lists the matches one a line, zsh's are recorded by a compadd wrapper. fish offers
`complete -C LINE`, its own completion engine without a terminal.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import pytest
from paths import REPO

from xcr0tool.arch.components import CATALOGUE, COMPACTED_BIT, EXTENDED_START, SUPERVISOR_MASK
from xcr0tool.cli.main import cli
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import PROFILES
from xcr0tool.model.layout import layout_from_cpuid
from xcr0tool.model.registers import register_names, registers

COMMANDS = set(cli.list_commands(click.Context(cli)))
SHELLS = ("bash", "zsh", "fish")
TIMEOUT = 30.0  # seconds for one completion: the program runs once per TAB
FILES = ("core.1", "core.2", "amber.json", "dumps/", ".hidden")
PROFILE_NAMES = {p.name for p in PROFILES}
VISIBLE_FILES = {"core.1", "core.2", "amber.json", "dumps"}  # as offered, without "/"

# (what is shown, command line, what the shell must offer: file names without a trailing /)
CASES: list[tuple[str, str, set[str]]] = [
    ("commands", "xcr0tool ", COMMANDS),
    ("one command", "xcr0tool deco", {"decode"}),
    ("options", "xcr0tool decode --la", {"--lanes", "--layout"}),
    ("decode SOURCE", "xcr0tool decode co", {"core.1", "core.2"}),
    ("extract SOURCE", "xcr0tool extract co", {"core.1", "core.2"}),
    ("convert SOURCE", "xcr0tool convert --to compacted co", {"core.1", "core.2"}),
    ("mask SOURCE", "xcr0tool mask --xcr0 0x7 co", {"core.1", "core.2"}),
    ("validate IMAGE", "xcr0tool validate co", {"core.1", "core.2"}),
    ("diff A", "xcr0tool diff co", {"core.1", "core.2"}),
    ("diff B", "xcr0tool diff core.1 co", {"core.1", "core.2"}),
    ("-o FILE", "xcr0tool extract core.1 -o am", {"amber.json"}),
    (
        "--layout: every profile and file",
        "xcr0tool layout --layout ",
        PROFILE_NAMES | VISIBLE_FILES,
    ),
    (
        "--layout: profiles and files alike",
        "xcr0tool decode --layout am",
        {"amd-zen3", "amd-zen4", "amd-zen5", "amber.json"},
    ),
    ("--layout: a file only", "xcr0tool diff --layout du", {"dumps"}),
    ("--from-layout", "xcr0tool convert --from-layout intel", {"intel", "intel-client"}),
    ("--reg", "xcr0tool decode --reg zmm3", {"zmm3", "zmm30", "zmm31"}),
    ("--reg PKRU", "xcr0tool diff --reg pk", {"pkru"}),
]


# ---------------------------------------------------------------- the scripts


def generated_script(shell: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "xcr0tool"],
        env={**os.environ, "_XCR0TOOL_COMPLETE": f"{shell}_source"},
        capture_output=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def shipped_script(shell: str) -> str:
    return (REPO / "completions" / f"xcr0tool.{shell}").read_text()


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (apt-get install {shell}): its completion not run")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of known files to complete in, and a bin/xcr0tool that runs this
    checkout's package with this interpreter (the scripts call `xcr0tool` by name)."""
    root = tmp_path_factory.mktemp("completion")
    files = root / "files"
    files.mkdir()
    for name in FILES:
        if name.endswith("/"):
            (files / name).mkdir()
        else:
            (files / name).write_bytes(b"")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "xcr0tool"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}"'
        ' -m xcr0tool "$@"\n'
    )
    shim.chmod(0o755)
    return root


def shell_env(workdir: Path) -> dict[str, str]:
    """Nothing of the user's shell set-up: no rc files, no inputrc, a home of its own."""
    return {
        "PATH": f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(workdir),
        "TERM": "dumb",
        "INPUTRC": os.devnull,
        "LC_ALL": "C.UTF-8",
    }


# ---------------------------------------------------------------- a terminal session


class Terminal:
    """A shell on a pseudo-terminal, 200 columns wide so that no line scrolls sideways."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        import fcntl  # POSIX only, as bash and zsh are
        import pty
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.out = b""

    def send(self, data: str, until: bytes | None = None) -> str:
        """Type `data`; with `until`, wait for it in what the shell writes back, and
        return all written since."""
        start = len(self.out)
        os.write(self.master, data.encode())
        if until is None:
            return ""
        deadline = time.monotonic() + TIMEOUT
        while until not in self.out[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {until!r} from the shell: {self.out[-3000:]!r}")
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the shell ended: {self.out[-3000:]!r}")
                self.out += chunk
        return self.out[start:].decode(errors="replace")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


# The edited line, printed by a key of our own (Ctrl-X z); the quotes keep the shell's echo
# of the set-up line from matching.
LINE_MARK = re.compile(r"<<<(.*?)>>>")


def offered_words(line: str, edited: str, listed: Sequence[str]) -> set[str]:
    """What the shell offered: the listed matches, else the word TAB put in the line."""
    if listed:
        return {word.rstrip("/") for word in listed}
    if edited == line:
        return set()
    return {edited.rstrip(" ").rsplit(" ", 1)[-1].rstrip("/")}


def complete_bash(script: Path, workdir: Path, lines: Sequence[str]) -> list[set[str]]:
    term = Terminal(
        [need("bash"), "--norc", "--noprofile", "-i"], shell_env(workdir), workdir / "files"
    )
    try:
        term.send(
            "PS1='> '; bind 'set show-all-if-ambiguous on';"
            " bind 'set completion-query-items 100000'; bind 'set page-completions off';"
            " bind 'set completion-display-width 0'; bind 'set bell-style none';"
            ' bind -x \'"\\C-xz": printf "\\n<<""<%s>"">>\\n" "$READLINE_LINE"\';'
            f" source '{script}'; echo RE''ADY\n",
            until=b"READY",
        )
        found = []
        for line in lines:
            written = term.send(line + "\t\x18z", until=b">>>")
            edited = LINE_MARK.findall(written)[-1]
            # after the typed line: one match a line, until the prompt is drawn again
            rows = written.replace("\x07", "").split("\r\n")
            listed = []
            for row in rows[1:]:
                if row.startswith(">") or "<<<" in row:
                    break
                if row.strip():
                    listed.append(row.strip())
            found.append(offered_words(line, edited, listed))
            # Ctrl-U, then the line-printing key, waited for to its end: the next line's
            # output then starts on the emptied line (on a loaded machine the redraw of
            # this one came late, and its prompt cut the next listing short).
            term.send("\x15\x18z", until=b"<<<>>>\r\n")
        return found
    finally:
        term.close()


def complete_zsh(script: Path, workdir: Path, lines: Sequence[str]) -> list[set[str]]:
    hits = workdir / "zsh-hits"
    term = Terminal([need("zsh"), "-f", "-i"], shell_env(workdir), workdir / "files")
    try:
        term.send(
            "PS1='> '; autoload -Uz compinit; compinit -u -D;"
            # every match the completion adds, whichever function adds it
            f" compadd() {{ local -a m; builtin compadd -O m \"$@\"; print -rl -- $m >> '{hits}';"
            ' builtin compadd "$@"; };'
            " show-line() { print -r -- $'\\n<<''<'$BUFFER'>''>>'; }; zle -N show-line;"
            f" bindkey '^Xz' show-line; source '{script}'; print RE''ADY\n",
            until=b"READY",
        )
        found = []
        for line in lines:
            hits.write_text("")
            written = term.send(line + "\t\x18z", until=b">>>")
            edited = LINE_MARK.findall(written)[-1]
            matches = [m for m in hits.read_text().splitlines() if m]
            found.append(offered_words(line, edited, matches))
            term.send("\x15\x18z", until=b"<<<>>>\r\n")  # as in complete_bash
        return found
    finally:
        term.close()


def complete_fish(script: Path, workdir: Path, lines: Sequence[str]) -> list[set[str]]:
    program = (
        f"source '{script}'; for line in $argv; echo '@@case'; complete --do-complete $line; end"
    )
    result = subprocess.run(
        [need("fish"), "--no-config", "-c", program, *lines],
        env=shell_env(workdir),
        cwd=workdir / "files",
        capture_output=True,
        text=True,
        timeout=TIMEOUT * len(lines),
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    blocks = result.stdout.split("@@case\n")[1:]
    assert len(blocks) == len(lines), result.stdout
    return [
        {row.split("\t", 1)[0].rstrip("/") for row in block.splitlines() if row} for block in blocks
    ]


COMPLETE: dict[str, Callable[[Path, Path, Sequence[str]], list[set[str]]]] = {
    "bash": complete_bash,
    "zsh": complete_zsh,
    "fish": complete_fish,
}


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def offered(workdir: Path) -> Callable[[str, str], list[set[str]]]:
    """offered(shell, "generated" | "shipped"): what each of CASES gets, once per module."""
    done: dict[tuple[str, str], list[set[str]]] = {}

    def get(shell: str, which: str) -> list[set[str]]:
        if (shell, which) not in done:
            need(shell)
            text = generated_script(shell) if which == "generated" else shipped_script(shell)
            script = workdir / f"{which}.{shell}"
            script.write_text(text)
            done[shell, which] = COMPLETE[shell](script, workdir, [c[1] for c in CASES])
        return done[shell, which]

    return get


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_offers_what_the_line_needs(
    offered: Callable[[str, str], list[set[str]]], shell: str
) -> None:
    """Commands, options, file names for SOURCE/A/B/IMAGE and -o, profile names and files
    for --layout, register names for --reg: with the script click generates now."""
    got = offered(shell, "generated")
    wrong = [
        f"{name} ({line!r}): offered {sorted(found)}, expected {sorted(want)}"
        for (name, line, want), found in zip(CASES, got, strict=True)
        if found != want
    ]
    assert not wrong, f"{shell}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("shell", SHELLS)
def test_shipped_script_is_current(
    offered: Callable[[str, str], list[set[str]]], shell: str
) -> None:
    """The script in completions/ offers what the generated one does, with the click
    installed here; regenerate it when not (README, Development)."""
    if shipped_script(shell) == generated_script(shell):
        return  # the same bytes: the same offers, no need to ask the shell twice
    shipped, generated = offered(shell, "shipped"), offered(shell, "generated")
    wrong = [
        f"{name} ({line!r}): shipped offers {sorted(a)}, generated {sorted(b)}"
        for (name, line, _), a, b in zip(CASES, shipped, generated, strict=True)
        if a != b
    ]
    assert not wrong, (
        f"regenerate completions/xcr0tool.{shell}"
        f" (_XCR0TOOL_COMPLETE={shell}_source xcr0tool):\n" + "\n".join(wrong)
    )


def test_reg_completion_names_are_what_decode_shows() -> None:
    """--reg offers exactly the names `registers` gives, in its order, for a 64-bit image
    holding every catalogue component (compacted, as XSAVES writes supervisor state)."""
    leaves: dict[int, tuple[int, int, int, int]] = {}
    offset, every = EXTENDED_START, 0b11
    for comp in CATALOGUE:
        if comp.id < 2:
            continue
        every |= comp.bit
        ecx = (1 if comp.supervisor else 0) | (2 if comp.aligned else 0)
        leaves[comp.id] = (comp.size, 0 if comp.supervisor else offset, ecx, 0)
        offset += 0 if comp.supervisor else comp.size
    user, supervisor = every & ~SUPERVISOR_MASK, every & SUPERVISOR_MASK
    leaves[0] = (user & 0xFFFFFFFF, offset, offset, user >> 32)
    leaves[1] = (0xF, 0, supervisor & 0xFFFFFFFF, supervisor >> 32)
    layout = layout_from_cpuid(leaves, "every catalogue component")
    data = bytearray(layout.compacted_size(every))
    struct.pack_into("<I", data, 24, 0x1F80)  # MXCSR
    struct.pack_into("<QQ", data, 512, every, every | COMPACTED_BIT)  # XSTATE_BV, XCOMP_BV
    image = build_image(bytes(data), origin="every component", layout=layout)
    assert [r.name for r in registers(image)] == register_names()
    assert len(set(register_names())) == len(register_names())
