"""One error hierarchy; the click layer turns any of these into one line and exit 2."""

from __future__ import annotations


class XcrError(Exception):
    """Base of every error xcr0tool reports to a user."""


class InputError(XcrError):
    """An input (file, stdin, process) is missing, truncated or not what it claims to be.

    The message names the input and says what is wrong, in one line.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class LayoutError(XcrError):
    """No layout can be had, or two fit and the choice would be a guess."""


class UsageError(XcrError):
    """The request itself cannot be carried out (a value the architecture forbids, ...)."""
