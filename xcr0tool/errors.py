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
    """No layout can be had, or two fit and the choice would be a guess.

    `source` names what the layout was for or read from (an image, a layout file; None
    when the layout itself is the subject), `problem` says what is wrong; its str is
    "source: problem", or the problem alone."""

    def __init__(self, source: str | None, problem: str) -> None:
        super().__init__(problem if source is None else f"{source}: {problem}")
        self.source = source
        self.problem = problem


class HostUnavailable(XcrError):
    """This machine cannot be asked: not x86-64 Linux, no XSAVE, no CPUID leaf 0xD, or
    a policy forbids running the instructions. Callers that have a fallback catch this,
    and only this."""


class UsageError(XcrError):
    """The request itself cannot be carried out (a value the architecture forbids, ...)."""
