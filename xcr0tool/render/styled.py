"""Text for a terminal: lines of styled spans, drawn with or without colour.

The terminal views are built here rather than with rich's Table: a 300-thread core has
about 20,000 register lines, and a rich Table measures every cell of every table it
draws (30x the time of the same text written to a pipe, issue 12). A Page is plain
strings and a handful of SGR codes, so drawing it costs what joining the strings costs.

Nothing here interprets the text it is given: a file name such as 'd[/bold]/img.bin' or
':smile:' is shown as it is (no markup, no emoji codes), whatever the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rich.console import Console

# ECMA-48 SGR parameters of the few styles the views use; basic colours, which every
# colour terminal has (no colour-system probing needed).
_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}

Span = tuple[str, str]  # (text, style): style is space-separated names from _SGR, or ""


def sgr(style: str) -> str:
    """The escape sequence that starts `style` ('' for no style)."""
    codes = [_SGR[name] for name in style.split()]
    return f"\x1b[{';'.join(codes)}m" if codes else ""


class Screen(NamedTuple):  # not a dataclass: cheap to define at every start
    """Where a terminal view is drawn: its width in columns and whether it takes colour."""

    width: int = 80
    colour: bool = False


class Page:
    """A document for a terminal, drawn line by line as it is built: each line is joined
    once, with SGR codes around styled spans on a colour screen."""

    def __init__(self, screen: Screen | None = None) -> None:
        self.screen = screen or Screen()
        self._lines: list[str] = []
        self._starts: dict[str, str] = {}

    def paint(self, text: str, style: str) -> str:
        """`text` in `style` (unchanged without colour, style or text)."""
        if not (style and text and self.screen.colour):
            return text
        start = self._starts.get(style)
        if start is None:
            start = self._starts[style] = sgr(style)
        return f"{start}{text}\x1b[0m"

    def codes(self, style: str) -> tuple[str, str]:
        """What starts and ends `style` on this screen: for loops that paint many
        cells alike ('', '' without colour)."""
        if not (style and self.screen.colour):
            return "", ""
        return sgr(style), "\x1b[0m"

    def line(self, text: str) -> None:
        """A line made by the caller (with `codes`), taken as it is."""
        self._lines.append(text)

    def _span(self, part: str | Span) -> str:
        return part if isinstance(part, str) else self.paint(*part)

    def add(self, *parts: str | Span) -> None:
        """One line; a bare string is unstyled."""
        self._lines.append("".join(map(self._span, parts)).rstrip(" "))

    def blank(self) -> None:
        self._lines.append("")

    def rule(self, title: str, style: str = "bold") -> None:
        """A horizontal rule across the screen with the title in its middle."""
        label = f" {title} "
        room = max(self.screen.width - len(label), 4)
        left = room // 2
        self.add("─" * left, (label, style), "─" * (room - left))

    def table(
        self,
        header: Sequence[str] | None,
        rows: Iterable[Sequence[str | Span]],
        *,
        right: Iterable[int] = (),
        indent: int = 1,
        gap: int = 2,
        header_style: str = "bold",
    ) -> None:
        """Columns padded to their widest cell; `right` are the right-aligned columns.
        Trailing spaces are never written."""
        body = [[(c, "") if isinstance(c, str) else c for c in row] for row in rows]
        every = [[(h, header_style) for h in header], *body] if header is not None else body
        if not every:
            return
        columns = range(len(every[0]))
        widths = [max(len(row[i][0]) for row in every) for i in columns]
        flush_right = set(right)
        last = len(widths) - 1
        lead, pad, paint = " " * indent, " " * gap, self.paint
        for row in every:
            cells = []
            for i, (text, style) in enumerate(row):
                if i in flush_right:
                    cells.append(paint(text.rjust(widths[i]), style))
                elif i == last:
                    cells.append(paint(text, style))
                else:
                    cells.append(paint(text, style) + " " * (widths[i] - len(text)))
            self._lines.append((lead + pad.join(cells)).rstrip(" "))

    def render(self) -> str:
        """The page as text."""
        return "\n".join(self._lines) + "\n" if self._lines else ""


def drawn_by_rich(draw: Callable[[Console], None], screen: Screen) -> str:
    """What a rich-drawing renderer prints, as text for this screen: markup and emoji
    codes off (user text is never interpreted), colour only on a colour screen."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=screen.width,
        force_terminal=screen.colour,
        color_system="standard" if screen.colour else None,
        no_color=not screen.colour,
        markup=False,
        emoji=False,
        highlight=False,
    )
    draw(console)
    return buffer.getvalue()
