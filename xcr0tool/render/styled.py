"""Text for a terminal: lines of styled spans, drawn with or without colour.

The terminal views are built here rather than with rich's Table: a 300-thread core has
about 20,000 register lines, and a rich Table measures every cell of every table it
draws (30x the time of the same text written to a pipe, issue 12). A Page is plain
strings and a handful of SGR codes, so drawing it costs what joining the strings costs.

Nothing here interprets the text it is given: a file name such as 'd[/bold]/img.bin' or
':smile:' is shown as it is (no markup, no emoji codes), whatever the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Screen:
    """Where a terminal view is drawn: its width in columns and whether it takes colour."""

    width: int = 80
    colour: bool = False


@dataclass
class Page:
    """A document for a terminal: lines of spans, drawn by `render`."""

    screen: Screen = field(default_factory=Screen)
    lines: list[list[Span]] = field(default_factory=list)

    def add(self, *parts: str | Span) -> None:
        """One line; a bare string is unstyled."""
        self.lines.append([(p, "") if isinstance(p, str) else p for p in parts])

    def blank(self) -> None:
        self.lines.append([])

    def rule(self, title: str, style: str = "bold") -> None:
        """A horizontal rule across the screen with the title in its middle."""
        label = f" {title} "
        room = max(self.screen.width - len(label), 4)
        left = room // 2
        self.lines.append([("─" * left, ""), (label, style), ("─" * (room - left), "")])

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
        head = [(h, header_style) for h in header] if header is not None else None
        every = [head, *body] if head is not None else body
        if not every:
            return
        widths = [max(len(row[i][0]) for row in every) for i in range(len(every[0]))]
        flush_right = set(right)
        pad = " " * gap
        for row in every:
            line: list[Span] = [(" " * indent, "")] if indent else []
            last = len(row) - 1
            for i, (text, style) in enumerate(row):
                room = widths[i] - len(text)
                if i in flush_right:
                    line.append((" " * room + text, style))
                elif i == last:
                    line.append((text, style))
                else:
                    line.append((text, style))
                    line.append((" " * room, ""))
                if i != last:
                    line.append((pad, ""))
            self.lines.append(line)

    def render(self) -> str:
        """The page as text: with SGR codes on a colour screen, plain otherwise."""
        if not self.screen.colour:
            return "".join("".join(text for text, _ in line).rstrip() + "\n" for line in self.lines)
        starts: dict[str, str] = {}
        out = []
        for line in self.lines:
            parts = []
            for text, style in line:
                if style and text:
                    start = starts.get(style)
                    if start is None:
                        start = starts[style] = sgr(style)
                    parts.append(f"{start}{text}\x1b[0m")
                else:
                    parts.append(text)
            out.append("".join(parts).rstrip(" ") + "\n")
        return "".join(out)
