"""`xcr0tool host`."""

from __future__ import annotations

import click

from xcr0tool.errors import XcrError


@click.command()
def host() -> None:
    """(being built)"""
    raise XcrError("host is not built yet")
