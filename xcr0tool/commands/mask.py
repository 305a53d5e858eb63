"""`xcr0tool mask`."""

from __future__ import annotations

import click

from xcr0tool.errors import XcrError


@click.command()
def mask() -> None:
    """(being built)"""
    raise XcrError("mask is not built yet")
