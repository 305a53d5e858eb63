"""The command line: a thin click layer. Commands parse options, call the model, and hand
a result to a renderer. Every XcrError becomes one line on stderr and exit status 2;
1 is kept for "differs" (diff) and "would fault" (validate)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from xcr0tool.errors import XcrError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="xcr0tool", prog_name="xcr0tool")
@click.option("--traceback", is_flag=True, hidden=True, help="Show the stack on errors.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Look at, compare and transform x86 XSAVE images.

    \b
    Examples:
      xcr0tool decode core.1234                  every thread's registers
      xcr0tool decode core.1234@1235 --reg 'zmm*'
      xcr0tool extract core.1234 | xcr0tool decode -
      xcr0tool layout --layout amd-zen4 --xcr0 0x2e7
      xcr0tool compat core.1234 host             will its state fit this machine?
    """
    ctx.obj = {"traceback": traceback}


def _register_commands() -> None:
    # Each command module imports only click; heavy modules load inside the commands.
    from xcr0tool.cli.commands.compat import compat
    from xcr0tool.cli.commands.convert import convert
    from xcr0tool.cli.commands.decode import decode
    from xcr0tool.cli.commands.diff import diff
    from xcr0tool.cli.commands.extract import extract
    from xcr0tool.cli.commands.host import host
    from xcr0tool.cli.commands.layout import layout_command
    from xcr0tool.cli.commands.mask import mask
    from xcr0tool.cli.commands.validate import validate

    for command in (decode, extract, layout_command, convert, mask, diff, validate, host, compat):
        cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the click app and turn our errors into one line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args or bool(os.environ.get("XCR0TOOL_TRACEBACK"))
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting:
        # diff's and validate's 1 arrives here.
        code = cli.main(args=args, prog_name="xcr0tool", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as usage:
        usage.show()
        sys.exit(usage.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except XcrError as error:
        if show_traceback:
            raise
        click.echo(f"xcr0tool: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`| head`): end quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except OSError as error:
        # The last net for I/O trouble no check foresaw (a file that vanished or became
        # unreadable between check and use): still one line, never a traceback.
        if show_traceback:
            raise
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"xcr0tool: {where}{(error.strerror or str(error)).lower()}", err=True)
        sys.exit(2)
