"""`xcr0tool convert`."""

from __future__ import annotations

import click

from xcr0tool.errors import XcrError


@click.command()
def convert() -> None:
    """(being built)"""
    raise XcrError("convert is not built yet")
