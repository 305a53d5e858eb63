"""What one start of the program loads. Commands are looked up lazily (click's "Lazily
loading subcommands"): a run imports the module of the command it runs and no other, so
that `decode` pays for no other command's options; `--help`, which shows every command's
short help, imports them all.

Measured in an interpreter without site hooks (bare_python), where nothing else has
loaded a module before the program does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from bare_python import run_bare
from clirunner import ok, run
from paths import FIXTURES

from xcr0tool.cli.main import COMMANDS, cli

CORE = FIXTURES / "linux-amd-avx512bw-1t.core"


def modules_loaded(*args: str) -> set[str]:
    """The modules loaded after one run of `xcr0tool ARGS`, its output discarded (a pipe's
    view, without colour)."""
    code = (
        "import os, sys\n"
        "os.environ.pop('FORCE_COLOR', None)\n"
        "from xcr0tool.cli.main import main\n"
        "sys.stdout = open(os.devnull, 'w')\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "sys.stdout = sys.__stdout__\n"
        "print(sorted(sys.modules))\n"
    )
    loaded: list[str] = ast.literal_eval(run_bare(code))
    return set(loaded)


def commands_loaded(*args: str) -> list[str]:
    """The command modules one run of `xcr0tool ARGS` imports."""
    prefix = "xcr0tool.cli.commands."
    return sorted(m.removeprefix(prefix) for m in modules_loaded(*args) if m.startswith(prefix))


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("raw") / "thread.xsave"
    ok(run("extract", str(CORE), "-o", str(image)))
    return image


def test_decode_of_a_raw_image_loads_only_decode(raw_image: Path) -> None:
    assert commands_loaded("decode", str(raw_image)) == ["decode"]


def test_decode_json_of_a_core_loads_only_decode() -> None:
    assert commands_loaded("decode", "--json", str(CORE)) == ["decode"]


def test_layout_loads_only_layout() -> None:
    assert commands_loaded("layout", "--json") == ["layout"]


def test_help_loads_every_command() -> None:
    """The probe sees command modules: --help needs each one's short help."""
    assert commands_loaded("--help") == sorted(COMMANDS)


def test_decode_in_a_pipe_loads_no_json_nor_terminal_modules() -> None:
    """Plain text for a pipe asks no terminal size (shutil, which loads bz2 and lzma)."""
    loaded = modules_loaded("decode", str(CORE))
    assert not loaded & {"json", "shutil", "rich"}
    assert "xcr0tool.render.image" in loaded  # the probe sees what the decode loaded


def test_decode_json_loads_json_and_no_terminal_modules() -> None:
    loaded = modules_loaded("decode", "--json", str(CORE))
    assert "json" in loaded
    assert not loaded & {"shutil", "rich", "xcr0tool.render.styled"}
    # --layout's files and --lanes's text neither
    assert not loaded & {"xcr0tool.layouts.files", "xcr0tool.render.lanes"}


def test_every_command_is_found_by_its_own_name() -> None:
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_unknown_command_is_a_usage_error() -> None:
    result = run("no-such-command")
    assert result.returncode == 2
    assert b"No such command 'no-such-command'" in result.stderr


def test_the_program_puts_what_it_loaded_out_of_the_collectors_sight() -> None:
    """The program (xcr0tool/__main__.py) freezes what it loaded, at start and at the end,
    and leaves the collector enabled while the command runs."""
    code = (
        "import atexit, gc, os, sys\n"
        "sys.argv = ['xcr0tool', 'layout']\n"
        "sys.stdout = open(os.devnull, 'w')\n"
        "import xcr0tool.cli.main as app\n"
        "seen = []\n"
        "real = app._run\n"
        "def spy(args):\n"
        "    seen.append((gc.isenabled(), gc.get_freeze_count()))\n"
        "    return real(args)\n"
        "app._run = spy\n"
        "atexit.register(lambda: print(*seen[0], gc.get_freeze_count(), file=sys.__stdout__))\n"
        "from xcr0tool.__main__ import run\n"
        "run()\n"
    )
    enabled, frozen_at_start, frozen_at_exit = run_bare(code).split()
    assert enabled == "True"
    assert 0 < int(frozen_at_start) < int(frozen_at_exit)


def test_main_with_arguments_leaves_the_collector_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """A caller that goes on running (these tests) keeps its garbage collected."""
    import gc

    from xcr0tool.__main__ import run as program

    before = gc.get_freeze_count()
    ok(run("layout"))
    program(["layout", "--json"])
    assert '"components"' in capsys.readouterr().out
    assert gc.get_freeze_count() == before
    assert gc.isenabled()
