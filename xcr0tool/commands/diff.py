"""`xcr0tool diff`."""

from __future__ import annotations

import click

from xcr0tool.errors import XcrError


@click.command()
def diff() -> None:
    """(being built)"""
    raise XcrError("diff is not built yet")
