"""`xcr0tool validate`."""

from __future__ import annotations

import click

from xcr0tool.errors import XcrError


@click.command()
def validate() -> None:
    """(being built)"""
    raise XcrError("validate is not built yet")
