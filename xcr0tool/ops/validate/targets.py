"""Targets: what loads the image and the machine state it loads into, every default
taken from the image, else this machine, each with its source; and the subjects, read
through the one source reader (sources/open.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import BY_NAME, EXTENDED_START, SUPERVISOR_MASK, describe_mask
from xcr0tool.arch.mxcsr import MXCSR_MASK_DEFAULT
from xcr0tool.arch.offsets import read_u32, read_u64
from xcr0tool.arch.xcr0 import check_xcr0, is_xcr0, least_xcr0
from xcr0tool.errors import HostUnavailable, InputError, LayoutError
from xcr0tool.layouts.choose import build_image
from xcr0tool.model.image import HostFallback, XsaveImage, xcr0_word_problem
from xcr0tool.model.layout import LEGACY_BITS, Layout
from xcr0tool.model.reread import Mapped
from xcr0tool.model.sigframe import signal_frame_info
from xcr0tool.ops.validate.model import ALL_ONES, CPU, SIGRETURN, XRSTOR, Subject, Target


@dataclass(frozen=True)
class HostFacts:
    """What this machine says about XRSTOR (xss: None when CPUID does not pin it down)."""

    xcr0: int
    mxcsr_mask: int
    xsavec: bool
    xss: int | None  # the one IA32_XSS value CPUID.(0xD,1).EBX explains
    layout: Layout


@cache
def host_facts() -> HostFacts | None:
    """This machine's XCR0, MXCSR_MASK, XSAVEC and layout; None off x86-64 Linux."""
    try:
        from xcr0tool.sources import cpu, hostinfo
        from xcr0tool.sources.open import host_layout

        table = cpu.leaf_0d()
        xcr0 = cpu.xgetbv(0)
        return HostFacts(
            xcr0=xcr0,
            mxcsr_mask=hostinfo.mxcsr_mask_of(cpu.xsave_snapshot(compacted=False)),
            xsavec=hostinfo.xsave_support(table).xsavec,
            xss=hostinfo.inferred_xss(table, xcr0)[0],
            layout=host_layout(),
        )
    except HostUnavailable:
        return None


def make_target(
    subject: Subject,
    *,
    check: str = CPU,
    instruction: str = XRSTOR,
    xcr0: int | None = None,
    xss: int | None = None,
    rfbm: int | None = None,
    mxcsr_mask: int | None = None,
    layout: Layout | None = None,
    host: HostFacts | None = None,
) -> Target:
    """The target with every value not given taken from the image, else this machine
    (`host`), each with its source. A given XCR0 is refused (UsageError, the one reason
    text) unless XCR0 can hold it."""
    if xcr0 is not None:
        check_xcr0(xcr0)
    xcr0_value, xcr0_source = _default_xcr0(subject, xcr0, host, check)
    if xss is not None:
        xss_value, xss_source = xss, "given"
    elif host is not None and host.xss is not None:
        xss_value, xss_source = host.xss, "this machine's, inferred from CPUID.(0xD,1).EBX"
    else:
        xss_value, xss_source = 0, "IA32_XSS cannot be read here: taken as 0"
    field_mask = read_u32(subject.data, at.MXCSR_MASK)
    if mxcsr_mask is not None:
        mask, mask_source = mxcsr_mask, "given"
    elif field_mask:
        mask, mask_source = field_mask, "the image's MXCSR_MASK field"
    elif host is not None:
        mask, mask_source = host.mxcsr_mask, "this machine's, the image's field is 0"
    else:
        mask, mask_source = MXCSR_MASK_DEFAULT, "the SDM default, the image's field is 0"
    size_layout, size_source = _size_layout(subject, layout, host)
    user_mask, user_what, user_why = _user_features(subject, xcr0_value, check)
    user_size = None
    if size_layout is not None:
        try:
            user_size = size_layout.standard_size(user_mask)
        except LayoutError:
            size_source = "unknown: the layout does not know every XCR0 component"
    return Target(
        check=check,
        instruction=instruction,
        xcr0=xcr0_value,
        xcr0_source=xcr0_source,
        xss=xss_value,
        xss_source=xss_source,
        rfbm=ALL_ONES if rfbm is None else rfbm,
        mxcsr_mask=mask,
        mxcsr_mask_source=mask_source,
        xsavec=None if host is None else host.xsavec,
        user_size=user_size,
        user_size_source=f"standard size of {user_what} in {size_source}{user_why}",
    )


# XFEATURE_MASK_USER_DYNAMIC (arch/x86/include/asm/fpu/xstate.h): user components a task's
# fpstate holds only once it has asked for them (arch_prctl ARCH_REQ_XCOMP_PERM) and used
# them; fpu__init_system_xstate leaves them out of fpu_user_cfg.default_features.
LINUX_USER_DYNAMIC = BY_NAME["xtiledata"].bit  # AMX tile data


def _user_features(subject: Subject, xcr0: int, check: str) -> tuple[int, str, str]:
    """The user components whose standard size bounds the buffer, what to call them, and
    why some of XCR0's are left out ("" when none are).

    ptrace takes fpu_user_cfg.max_size: all of XCR0's user components (regset.c
    xstateregs_set). rt_sigreturn takes the task's fpstate->user_size
    (signal.c check_xstate_in_sigframe): without the dynamic components unless the task
    has them, which its frame's xfeatures (fpstate->user_xfeatures, save_sw_bytes) show.
    """
    user = xcr0 & ~SUPERVISOR_MASK
    what = f"XCR0 {xcr0:#x}"
    frame = subject.signal_frame
    dynamic = user & LINUX_USER_DYNAMIC & ~(frame.xfeatures if frame is not None else 0)
    if check != SIGRETURN or not dynamic:
        return user, what, ""
    names = describe_mask(dynamic)
    return (
        user & ~dynamic,
        f"{what} less {names}",
        f"; a task's fpstate holds {names} only once the task has asked for it"
        " (ARCH_REQ_XCOMP_PERM) and used it, and the frame's xfeatures do not have it",
    )


def _default_xcr0(
    subject: Subject, given: int | None, host: HostFacts | None, check: str
) -> tuple[int, str]:
    if given is not None:
        return given, "given"
    # A signal frame's bytes 464-511 are sw_bytes, never an XCR0 word, even when spoilt.
    # XRSTOR ignores them (tests/oracles/test_validate_cpu.py): a word that is no XCR0 (the one
    # rule table, arch/xcr0.py) is set aside, saying why, rather than refused.
    aside = ""
    if not subject.fxsave_only and check != SIGRETURN and subject.signal_frame is None:
        word = read_u64(subject.data, at.SW_BYTES)
        if word and is_xcr0(word):
            return word, "the image's XCR0 word at byte 464"
        problem = xcr0_word_problem(word)
        if problem is not None:
            aside = f"; {problem.split('; pass --xcr0')[0]}"
    if host is not None:
        return host.xcr0, f"this machine's (XGETBV){aside}"
    if subject.image is not None:
        return subject.image.xcr0, subject.image.xcr0_source + aside
    return least_xcr0(subject.xstate_bv | LEGACY_BITS), (
        f"XSTATE_BV: no XCR0 word and no XSAVE here{aside}"
    )


def _size_layout(
    subject: Subject, given: Layout | None, host: HostFacts | None
) -> tuple[Layout | None, str]:
    if given is not None:
        return given, given.source
    if host is not None:
        return host.layout, host.layout.source
    if subject.image is not None:
        return subject.image.layout, subject.image.layout.source
    return None, "no layout"


# Inputs ------------------------------------------------------------------------------------
def load_subjects(
    name: str,
    *,
    layout_option: str | None = None,
    xcr0: int | None = None,
    warnings: list[str] | None = None,
) -> Sequence[Subject]:
    """The images of a source, as subjects, read by the one source reader
    (sources/open.py: files, `-` with a raw image or a core piped in, cores, processes,
    self). Raw images are taken whatever their header says: a header XRSTOR would fault
    on is what this command is for, so a model that cannot be built leaves only the
    content checks undone. The source's warnings (an ignored --layout, ...) are added to
    `warnings`."""
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.sources.open import RawInput, images_of, opened_input

    if xcr0 is not None:
        check_xcr0(xcr0)
    explicit = resolve_layout_option(layout_option)
    with opened_input(name) as found:
        if isinstance(found, RawInput):
            return [subject_from_bytes(found.data, found.origin, explicit, xcr0)]
        result = images_of(found, explicit, xcr0)
        if warnings is not None:
            warnings.extend(result.warnings)
        if isinstance(result.images, list):
            return [_subject(image) for image in result.images]
        return Mapped(result.images, _subject)  # an rr trace's frames, read at each pass


def _subject(image: XsaveImage) -> Subject:
    return Subject(image.data, image.origin, image)


def subject_from_bytes(
    data: bytes, origin: str, layout: Layout | None = None, xcr0: int | None = None
) -> Subject:
    """A raw image as a subject: the model if it can be built (`layout`, else a guess,
    else this machine's layout), else the bytes alone. Below 576 bytes (and not a
    512-byte FXSAVE area) it is not an XSAVE image: InputError."""
    host = host_facts()
    fallback = None
    attempts: list[Layout | None] = [layout]
    if host is not None:
        host_layout = host.layout
        fallback = HostFallback(host.xcr0, lambda: host_layout)
        if layout is None:
            attempts.append(host_layout)
    xcr0s: list[int | None] = [xcr0]
    if xcr0 is None and _word_problem(data) is not None:
        # XRSTOR ignores bytes 464-511: a word there that is no XCR0 leaves the image to
        # be placed under this machine's XCR0, as the target is, else under the least
        # XCR0 that holds its XSTATE_BV.
        xstate_bv = read_u64(data, at.XSTATE_BV)
        xcr0s = [*([host.xcr0] if host is not None else []), least_xcr0(xstate_bv | LEGACY_BITS)]
    problem = ""
    for value in xcr0s:
        for attempt in attempts:
            try:
                image = build_image(data, origin=origin, layout=attempt, xcr0=value, host=fallback)
            except InputError as error:
                if len(data) < EXTENDED_START:
                    raise  # not an XSAVE image at all: trouble, not a verdict
                problem = problem or error.problem
                continue
            return Subject(data, origin, image)
    return Subject(data, origin, None, problem)


def _word_problem(data: bytes) -> str | None:
    """What is wrong with the XCR0 word at byte 464 (None in a signal frame, an FXSAVE
    area or when the word is an XCR0 or 0): model/image.py's one text."""
    if len(data) < EXTENDED_START or signal_frame_info(data) is not None:
        return None
    return xcr0_word_problem(read_u64(data, at.SW_BYTES))
