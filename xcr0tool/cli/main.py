"""The command line: a thin click layer. Commands parse options, call ops/ and return a
view (render/); one decorator (options.output_options) shows it. Every XcrError becomes
one line on stderr and exit status 2; 1 is kept for "differs" (diff) and "would fault"
(validate). The same handling runs in-process (click's CliRunner) and as a program."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, NoReturn

import click

from xcr0tool.errors import XcrError

# The commands, in the order `--help` lists them: name (its module under cli/commands) →
# the function. A new command is one module and one line here. A command's module is
# imported only when the command is looked up (App.get_command): `decode` loads no other
# command's module.
COMMANDS = {
    "decode": "decode",
    "extract": "extract",
    "layout": "layout_command",
    "convert": "convert",
    "mask": "mask",
    "diff": "diff",
    "validate": "validate",
    "host": "host",
    "compat": "compat",
}


class ReaderGone(Exception):
    """stdout's reader went away (`| head`). Not an OSError, so that click's own EPIPE
    handling (exit 1, which means "differs" here) never sees it."""


class App(click.Group):
    """The group that turns our errors into one line and exit 2, wherever it runs, and
    loads its commands lazily, as click's docs show ("Lazily loading subcommands")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)  # the order of COMMANDS, not the alphabet

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = import_module(f"xcr0tool.cli.commands.{cmd_name}")
        command: click.Command = getattr(module, COMMANDS[cmd_name])
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise ReaderGone from None
        except XcrError as error:
            if _traceback_wanted(ctx):
                raise
            click.echo(f"xcr0tool: {error}", err=True)
            ctx.exit(2)
        except OSError as error:
            # The last net for I/O trouble no check foresaw (a file that vanished or
            # became unreadable between check and use): still one line, no traceback.
            if _traceback_wanted(ctx):
                raise
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"xcr0tool: {where}{(error.strerror or str(error)).lower()}", err=True)
            ctx.exit(2)


def _traceback_wanted(ctx: click.Context) -> bool:
    return bool(ctx.params.get("traceback") or os.environ.get("XCR0TOOL_TRACEBACK"))


@click.group(
    cls=App,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="xcr0tool", prog_name="xcr0tool")
@click.option("--traceback", is_flag=True, hidden=True, help="Show the stack on errors.")
def cli(traceback: bool) -> None:
    """Look at, compare and transform x86 XSAVE images.

    \b
    SOURCE, wherever a command takes one:
      FILE         a raw XSAVE image (standard or compacted), or an ELF core: every thread
      CORE@TID     one thread of a core (or --thread TID)
      -            standard input: an image, or a core (--thread TID: one of its threads)
      pid:N        every thread of a live process, through ptrace (pid:N@TID: one)
      self         XSAVE and XSAVEC snapshots of this tool's own thread
                   (self@xsave, self@xsavec: one of them)
      TRACE        an rr trace directory: every frame with XSAVE data (TRACE@EVENT: one)
      CRIUDIR      CRIU images, or one core-TID.img (CRIUDIR@TID: one thread)

    \b
    Exit status:
      0    success: shown, written, the same, accepted
      1    diff: A and B differ; validate: would fault or be rejected; compat: not
           portable
      2    trouble: one line on stderr names the input and what is wrong
      141  the reader of the output went away (`| head`), as for any killed writer

    \b
    Output: the terminal view on a terminal (through a pager when longer than the
    screen), plain text in a pipe, JSON with --json; --color, NO_COLOR, FORCE_COLOR.
    Each command's --help has its options and examples; the man page has them all.

    \b
    Examples:
      xcr0tool decode core.1234                  every thread's registers
      xcr0tool decode core.1234@1235 --reg 'zmm*'
      xcr0tool extract core.1234 | xcr0tool decode -
      xcr0tool diff -q core.1234 core.5678 && echo same
      xcr0tool layout --layout amd-zen4 --xcr0 0x2e7
      xcr0tool compat core.1234 host             will its state fit this machine?
    """


def _reader_gone() -> NoReturn:
    """End as a writer whose reader left ends: killed by SIGPIPE (141 in a shell),
    quietly. Context managers have run by now: spooled inputs and temporaries are gone."""
    import signal  # here: its enums cost every start something

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # where SIGPIPE cannot kill


def _run(args: list[str]) -> int:
    """The exit status of one run of the app."""
    try:
        # Without standalone mode click returns Exit's status (diff's and validate's 1,
        # our 2) instead of exiting, and leaves its usage errors to us.
        code = cli.main(args=args, prog_name="xcr0tool", standalone_mode=False)
    except click.ClickException as usage:
        usage.show()
        return usage.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        return 130
    return code if isinstance(code, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the click app; exit statuses as `cli`'s help says. The program
    itself starts in xcr0tool/__main__.py."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at interpreter exit, so that EPIPE is seen
    except (ReaderGone, BrokenPipeError):
        _reader_gone()
    if code:
        sys.exit(code)
