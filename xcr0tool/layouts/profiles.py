"""Built-in layouts, each made of leaf 0xD lines copied from a real CPU's CPUID dump
(InstLatx64 collection, AIDA64 format), and the guess from XCR0 and image size.

A test checks every line here against the dump it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from xcr0tool.arch.components import bits, describe_mask
from xcr0tool.arch.xcr0 import least_xcr0
from xcr0tool.errors import LayoutError
from xcr0tool.formats.cpuid_dump import parse_cpuid_dump
from xcr0tool.model.layout import Layout, layout_from_cpuid


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    dumps: tuple[
        tuple[str, str], ...
    ]  # (dump file, its leaf 0xD lines); later dumps add sub-leaves


PROFILES: tuple[Profile, ...] = (
    Profile(
        "intel",
        "Intel standard layout with its holes: MPX (Skylake-X), AVX-512, PKRU and AMX"
        " (Sapphire Rapids)",
        (
            (
                "GenuineIntel00806F8_SapphireRapids_05_CPUID.txt",
                """\
CPUID 0000000D: 000602E7-00002B00-00002B00-00000000 [SL 00]
CPUID 0000000D: 0000001F-00002A80-0000DD00-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000040-00000440-00000000-00000000 [SL 05]
CPUID 0000000D: 00000200-00000480-00000000-00000000 [SL 06]
CPUID 0000000D: 00000400-00000680-00000000-00000000 [SL 07]
CPUID 0000000D: 00000080-00000000-00000001-00000000 [SL 08]
CPUID 0000000D: 00000008-00000A80-00000000-00000000 [SL 09]
CPUID 0000000D: 00000008-00000000-00000001-00000000 [SL 0A]
CPUID 0000000D: 00000010-00000000-00000001-00000000 [SL 0B]
CPUID 0000000D: 00000018-00000000-00000001-00000000 [SL 0C]
CPUID 0000000D: 00000030-00000000-00000001-00000000 [SL 0E]
CPUID 0000000D: 00000328-00000000-00000001-00000000 [SL 0F]
CPUID 0000000D: 00000040-00000AC0-00000002-00000000 [SL 11]
CPUID 0000000D: 00002000-00000B00-00000006-00000000 [SL 12]
""",
            ),
            (
                "GenuineIntel0050654_SkylakeX_CPUID.txt",
                """\
CPUID 0000000D: 000000FF-00000A80-00000A80-00000000 [SL 00]
CPUID 0000000D: 00000040-000003C0-00000000-00000000 [SL 03]
CPUID 0000000D: 00000040-00000400-00000000-00000000 [SL 04]
""",
            ),
        ),
    ),
    Profile(
        "intel-client",
        "Intel client without AVX-512 (Arrow Lake): PKRU still at 2688",
        (
            (
                "GenuineIntel00C0662_ArrowLake_07_CPUID.txt",
                """\
CPUID 0000000D: 00000207-00000340-00000A88-00000000 [SL 00]
CPUID 0000000D: 0000000F-000003D0-0000D900-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000080-00000000-00000001-00000000 [SL 08]
CPUID 0000000D: 00000008-00000A80-00000000-00000000 [SL 09]
CPUID 0000000D: 00000010-00000000-00000001-00000000 [SL 0B]
CPUID 0000000D: 00000018-00000000-00000001-00000000 [SL 0C]
CPUID 0000000D: 00000030-00000000-00000001-00000000 [SL 0E]
CPUID 0000000D: 00000328-00000000-00000001-00000000 [SL 0F]
""",
            ),
        ),
    ),
    Profile(
        "amd-zen3",
        "AMD Zen 3 (Vermeer): no AVX-512, PKRU at 2432",
        (
            (
                "AuthenticAMD0A20F10_K19_Vermeer2_CPUID.txt",
                """\
CPUID 0000000D: 00000207-00000340-00000988-00000000 [SL 00]
CPUID 0000000D: 0000000F-00000350-00001800-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000008-00000980-00000000-00000000 [SL 09]
CPUID 0000000D: 00000010-00000000-00000001-00000000 [SL 0B]
CPUID 0000000D: 00000018-00000000-00000001-00000000 [SL 0C]
""",
            ),
        ),
    ),
    Profile(
        "amd-zen4",
        "AMD Zen 4 (Genoa): AVX-512 packed at 832/896/1408, PKRU at 2432",
        (
            (
                "AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt",
                """\
CPUID 0000000D: 000002E7-00000980-00000988-00000000 [SL 00]
CPUID 0000000D: 0000000F-00000990-00001800-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000040-00000340-00000000-00000000 [SL 05]
CPUID 0000000D: 00000200-00000380-00000000-00000000 [SL 06]
CPUID 0000000D: 00000400-00000580-00000000-00000000 [SL 07]
CPUID 0000000D: 00000008-00000980-00000000-00000000 [SL 09]
CPUID 0000000D: 00000010-00000000-00000001-00000000 [SL 0B]
CPUID 0000000D: 00000018-00000000-00000001-00000000 [SL 0C]
""",
            ),
        ),
    ),
    Profile(
        "amd-zen5",
        "AMD Zen 5 (Turin): as Zen 4",
        (
            (
                "AuthenticAMD0B00F21_K20_Turin_01_CPUID.txt",
                """\
CPUID 0000000D: 000002E7-00000980-00000988-00000000 [SL 00]
CPUID 0000000D: 0000000F-00000990-00001800-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000040-00000340-00000000-00000000 [SL 05]
CPUID 0000000D: 00000200-00000380-00000000-00000000 [SL 06]
CPUID 0000000D: 00000400-00000580-00000000-00000000 [SL 07]
CPUID 0000000D: 00000008-00000980-00000000-00000000 [SL 09]
CPUID 0000000D: 00000010-00000000-00000001-00000000 [SL 0B]
CPUID 0000000D: 00000018-00000000-00000001-00000000 [SL 0C]
""",
            ),
        ),
    ),
)

BY_NAME = {p.name: p for p in PROFILES}
ALIASES = {"amd": "amd-zen4", "zen3": "amd-zen3", "zen4": "amd-zen4", "zen5": "amd-zen5"}
NAMES = (*BY_NAME, *ALIASES)


@cache
def profile_layout(name: str) -> Layout:
    profile = BY_NAME.get(ALIASES.get(name, name))
    if profile is None:
        raise LayoutError(None, f"no built-in layout {name!r}; choose one of {', '.join(NAMES)}")
    leaves: dict[int, tuple[int, int, int, int]] = {}
    for dump, lines in reversed(profile.dumps):
        leaves.update(parse_cpuid_dump(lines, dump))
    base = layout_from_cpuid(leaves, "", name=profile.name)
    cpus = " + ".join(d.split("_", 1)[1].removesuffix("_CPUID.txt") for d, _ in profile.dumps)
    return base.with_source(f"built-in profile {profile.name} (CPUID of {cpus})")


def _all_place_alike(layouts: Sequence[Layout], xcr0: int) -> bool:
    offsets = layouts[0].standard_offsets(xcr0)
    return all(other.standard_offsets(xcr0) == offsets for other in layouts[1:])


def buffer_xcr0(layout: Layout, xcr0: int, size: int) -> int | None:
    """The XCR0 larger than `xcr0` whose standard size in `layout` is `size` (the union
    of every such value), None when there is none: what a buffer of `size` bytes was
    sized for when an image of `xcr0` fills it. XSAVE with a smaller RFBM and XRSTOR
    place each component at its standard offset whatever the buffer's length (SDM vol. 1
    §13.4.3; tests/oracles/test_transforms.py), and the kernel's PTRACE_SETREGSET takes
    exactly its own user size (xstateregs_set) and reads each component at its own
    standard offset, never the word at byte 464 (copy_uabi_to_xstate): the image's
    components sit where that layout puts them."""
    grown = xcr0
    for i in bits(layout.user_mask() & ~xcr0):
        wider = least_xcr0(xcr0 | 1 << i)  # with the components XCR0 needs beside it
        try:
            if layout.standard_size(wider) == size:
                grown |= wider  # a union of XCR0 values keeps every rule of arch/xcr0.py
        except LayoutError:  # the layout lacks a component the rule table adds
            continue
    return grown if grown != xcr0 else None


def guess_layout(
    xcr0: int,
    size: int,
    what: str,
    candidates: Sequence[Layout] | None = None,
    *,
    buffer: bool = False,
) -> Layout:
    """Like gdb's guess for cores without a layout note: the profiles whose standard size
    for this XCR0 is exactly this size. Refuses when none fits, and when two fit but
    disagree on an offset.

    `buffer`: `size` is an image's, which may be the buffer of a larger XCR0 (a kernel's
    user size, `mask --keep-size`, an XSAVE with a smaller RFBM): when no profile has
    exactly `size` bytes for XCR0, those in which `size` is the standard size of a larger
    XCR0 fit (buffer_xcr0): a 2696-byte image of XCR0 0xe7 is Intel's PKRU-sized buffer,
    not AMD's (2440). A machine's size (CRIU's xsave_size) is exact: no `buffer`.

    Then an image longer than its XCR0 needs, in no profile's buffer size, is read when
    every built-in layout places that XCR0's components alike (x87, SSE and AVX are at
    the same offsets everywhere): the layout then does not matter, and the rest of the
    image is not read."""
    fits: list[Layout] = []
    roomy: list[Layout] = []
    known = 0  # layouts that place every component of XCR0
    for layout in candidates or [profile_layout(p.name) for p in PROFILES]:
        try:
            needed = layout.standard_size(xcr0)
        except LayoutError:
            continue
        known += 1
        if needed == size:
            fits.append(layout)
        elif needed < size:
            roomy.append(layout)
    grown: dict[int, int] = {}  # id(layout) -> the XCR0 whose buffer the image is
    if not fits and buffer:
        for layout in roomy:
            wider = buffer_xcr0(layout, xcr0, size)
            if wider is not None:
                fits.append(layout)
                grown[id(layout)] = wider
    if not fits and roomy and len(roomy) == known and _all_place_alike(roomy, xcr0):
        chosen = roomy[0]
        needed = chosen.standard_size(xcr0)
        return chosen.with_source(
            f"guess from XCR0 {xcr0:#x}: every built-in layout places it alike in {needed}"
            f" bytes, the rest of the {size} is not read: {chosen.source}"
        )
    if not fits:
        raise LayoutError(
            what,
            f"no built-in layout has {size} bytes for XCR0 {xcr0:#x}"
            f" ({describe_mask(xcr0)}); pass --layout FILE (a CPUID dump of the machine that"
            " saved it)",
        )
    chosen = fits[0]
    offsets = chosen.standard_offsets(xcr0)
    for other in fits[1:]:
        if other.standard_offsets(xcr0) != offsets:
            raise LayoutError(
                what,
                f"two layouts fit XCR0 {xcr0:#x} and {size} bytes but place"
                f" components differently: {chosen.name} and {other.name}; pass --layout",
            )
    also = f"; {', '.join(str(f.name) for f in fits[1:])} agree" if fits[1:] else ""
    wider = grown.get(id(chosen))
    sized = (
        f", the standard size of XCR0 {wider:#x} there (a buffer for more components:"
        f" the last {size - chosen.standard_size(xcr0)} bytes are not read)"
        if wider is not None
        else ""
    )
    return chosen.with_source(
        f"guess from XCR0 {xcr0:#x} and {size} bytes{sized}: {chosen.source}{also}"
    )
