"""compat: will XSAVE state survive the move between these machines, and which XCR0
makes it portable?

Pure: `Machine`s in (model.machine), a `CompatResult` out. Four answers:

- components: every component of any machine's XCR0, with its standard-format size,
  offset and 64-byte alignment on each machine;
- portable_xcr0: the largest XCR0 that every machine allows (a subset of each machine's
  XCR0), that XSETBV accepts (the XCR0 rule table of arch/xcr0.py), and whose every
  component sits at the same offset with the same size and alignment everywhere:
  standard-format state saved under it moves byte for byte;
- rr's verdict for every ordered pair (recorded on i, replayed on j), as rr 5.x decides
  in ReplaySession::ReplaySession and check_xsave_compatibility (src/ReplaySession.cc,
  src/util.cc), with rr's own words;
- CRIU's verdict for every ordered pair (dumped on i, restored on j), as
  cpu_validate_cpuinfo and cpu_validate_features (criu/arch/x86/cpu.c) decide with the
  fpu capability, with CRIU's own words;
plus the saved states (a core's threads, an rr trace's frames, the threads of a CRIU
dump) whose in-use components a target lacks or places elsewhere, and advice a user can
act on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from xcr0tool.arch.components import bits, component, describe_mask
from xcr0tool.arch.xcr0 import broken_rule, is_xcr0, xcr0_reason
from xcr0tool.errors import InputError
from xcr0tool.model.machine import (
    CRIU_FPU_CAPS,
    LEAF1_ECX_OSXSAVE,
    SUB1_XSAVEC,
    Machine,
    Placement,
    cpuid_record,
)

X87 = 1

# rr's cpuid_compatible (src/util.cc) compares CPUID.1:EAX & 0xF0FF0: family, model and
# extended model (not stepping, not extended family).
RR_CPU_TYPE_MASK = 0xF0FF0

# rr's own words (src/ReplaySession.cc at 5c202cd8), without its "[FATAL file:line]"
# prefix and with the trailing newlines dropped.
RR_FAULTING_REQUIRED = (
    "Trace was recorded with CPUID faulting enabled, but this\n"
    "system does not support CPUID faulting."
)
RR_CPUID_DIFFERS = (
    "Trace was recorded on a machine with different CPUID values\n"
    "and CPUID faulting is not enabled; replay will not work."
)
RR_NO_XSAVE = (
    "rr: Tracees had XSAVE but XSAVE is not available now; Replay will probably fail"
    " because glibc dynamic loader uses XSAVE"
)
RR_NO_XSAVEC = (
    "rr: Tracees had XSAVEC but XSAVEC is not available now; Replay will probably fail"
    " because glibc dynamic loader uses XSAVEC"
)


def rr_xcr0_differs(tracee_xcr0: int, our_xcr0: int) -> str:
    # rr prints both with HEX(), a void* through an ostream: glibc's "0x..." lower case.
    return (
        f"Trace XCR0 value {tracee_xcr0:#x} != our XCR0 value {our_xcr0:#x}; Replay will"
        " probably fail because glibc dynamic loader examines XCR0"
    )


def rr_feature_differs(feature: int) -> str:
    return (
        f"XSAVE offset/size/alignment differs for feature {feature}; H. Peter Anvin said"
        " this would never happen!"
    )


# The kernel's xsave_cpuid_features (arch/x86/kernel/fpu/xstate.c, Linux 6.x): the CPU
# feature whose absence makes fpu__init_system_xstate drop an XCR0 bit, by the name
# `clearcpuid=` takes (the /proc/cpuinfo flag, accepted since Linux 5.19). PKRU's entry
# is X86_FEATURE_OSPKE, which the kernel sets only when it enables PKU: clearing pku
# drops it. APX's X86_FEATURE_APX has no /proc/cpuinfo name, so no clearcpuid= name.
CLEARCPUID_FEATURE: dict[int, str | None] = {
    2: "avx",
    3: "mpx",
    4: "mpx",
    5: "avx512f",
    6: "avx512f",
    7: "avx512f",
    9: "pku",
    17: "amx_tile",
    18: "amx_tile",
    19: None,
}


@dataclass(frozen=True)
class ComponentRow:
    id: int
    name: str
    on: tuple[Placement | None, ...]  # per machine; None: not in that machine's XCR0
    same: bool  # in every machine's XCR0, at the same place everywhere


@dataclass(frozen=True)
class RrVerdict:
    recorded_on: int
    replayed_on: int
    replays: bool
    fatal_feature: int | None
    message: str | None  # rr's fatal message
    warnings: tuple[str, ...]  # rr's warnings, and what could not be decided


@dataclass(frozen=True)
class CriuVerdict:
    dumped_on: int
    restored_on: int
    restores: bool | None  # None: a machine lacks what CRIU compares
    reason: str | None  # CRIU's error message, or what is not known


@dataclass(frozen=True)
class ImageCheck:
    machine: int
    tid: int | None
    label: str
    event: int | None  # an rr trace's frame: its index in events
    in_use: int
    lost_on: tuple[int, ...]  # targets whose XCR0 lacks an in-use component
    moved_on: tuple[int, ...]  # targets that place an in-use component elsewhere
    lost: tuple[tuple[int, int], ...]  # (target, components lacking)
    moved: tuple[tuple[int, int], ...]  # (target, components placed elsewhere)


@dataclass(frozen=True)
class CompatResult:
    machines: tuple[Machine, ...]
    components: tuple[ComponentRow, ...]
    portable_xcr0: int
    rr: tuple[RrVerdict, ...]
    criu: tuple[CriuVerdict, ...]
    images: tuple[ImageCheck, ...]
    advice: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def portable(self) -> bool:
        """Every machine's XCR0 is the portable one already: nothing to lose."""
        return all(m.xcr0 == self.portable_xcr0 for m in self.machines)


# XCR0 -------------------------------------------------------------------------------


def xcr0_allowed(value: int) -> bool:
    """The one rule table (arch/xcr0.py)."""
    return is_xcr0(value)


def broken_xcr0_rule(value: int) -> str | None:
    rule = broken_rule(value)
    return None if rule is None else rule.text


# The most bits added to a valid XCR0 at once while growing it: the rule table's largest
# all-or-none group (AVX-512's three components). A test checks the growth against an
# exhaustive search.
_GROWTH_STEP = 3


def largest_valid_subset(candidate: int, allowed: Callable[[int], bool] = xcr0_allowed) -> int:
    """The largest XCR0 made of candidate's bits that `allowed` accepts.

    The rules (a bit always set, groups all or none, a group needing another bit) accept
    the union of any two values they accept, so the largest accepted subset is unique;
    it is found by starting from x87 alone and adding the candidate's bits in the
    smallest steps the rules accept, for at most 3 bits at a time.
    """
    if not candidate & X87 or not allowed(X87):
        return 0
    current = X87
    rest = bits(candidate & ~current)
    grew = True
    while grew and rest:
        grew = False
        for size in range(1, min(_GROWTH_STEP, len(rest)) + 1):
            for chosen in combinations(rest, size):
                trial = current | sum(1 << b for b in chosen)
                if allowed(trial):
                    current = trial
                    rest = [b for b in rest if not current >> b & 1]
                    grew = True
                    break
            if grew:
                break
    return current


def check_machine(machine: Machine) -> None:
    """What every later answer needs: an XCR0 XSETBV would accept, each of whose
    components the description places."""
    reason = xcr0_reason(machine.xcr0)  # the one reason text (arch/xcr0.py)
    if reason is not None:
        raise InputError(machine.source, f"{reason} (XCR0 from {machine.xcr0_source})")
    missing = machine.unplaced()
    if missing:
        names = ", ".join(f"{i} ({component(i).name})" for i in missing)
        raise InputError(
            machine.source,
            f"XCR0 {machine.xcr0:#x} has component{'s' if len(missing) > 1 else ''} {names}"
            f" but {machine.cpuid_source} does not place {'them' if len(missing) > 1 else 'it'}"
            " (no CPUID leaf 0xD sub-leaf)",
        )


def component_rows(machines: Sequence[Machine]) -> tuple[ComponentRow, ...]:
    union = 0
    for m in machines:
        union |= m.xcr0
    rows = []
    for i in bits(union):
        on = tuple(m.placement(i) for m in machines)
        same = all(p is not None for p in on) and len(set(on)) == 1
        rows.append(ComponentRow(i, component(i).name, on, same))
    return tuple(rows)


def portable_xcr0(machines: Sequence[Machine]) -> int:
    common = ~0
    for m in machines:
        common &= m.xcr0
    for row in component_rows(machines):
        if not row.same:
            common &= ~(1 << row.id)
    return largest_valid_subset(common)


# rr ---------------------------------------------------------------------------------


def _cpu_type(machine: Machine) -> int | None:
    signature = machine.signature
    return None if signature is None else signature & RR_CPU_TYPE_MASK


def _xsave_enabled(machine: Machine) -> bool:
    """rr's xsave_enabled() / tracee_xsave_enabled(): CPUID.1:ECX.OSXSAVE. A description
    without leaf 1 is of a machine with XSAVE state, so XSAVE is taken as enabled."""
    if machine.osxsave is not None:
        return machine.osxsave
    regs = cpuid_record(machine.cpuid, 1, 0)
    return True if regs is None else bool(regs[2] & LEAF1_ECX_OSXSAVE)


def _has_xsavec(machine: Machine) -> bool:
    # `record && (record->out.eax & XSAVEC_FEATURE_FLAG)`: no sub-leaf 1, no XSAVEC.
    regs = machine.subleaf(1)
    return regs is not None and bool(regs[0] & SUB1_XSAVEC)


def rr_verdict(machines: Sequence[Machine], recorded: int, replayed: int) -> RrVerdict:
    """rr replaying on `replayed` a trace recorded on `recorded`: the x86 checks of
    ReplaySession::ReplaySession in order, then check_xsave_compatibility."""
    rec, rep = machines[recorded], machines[replayed]
    warnings: list[str] = []

    def fatal(message: str, feature: int | None = None) -> RrVerdict:
        return RrVerdict(recorded, replayed, False, feature, message, tuple(warnings))

    # trace_in.uses_cpuid_faulting() && !has_cpuid_faulting()
    if rec.uses_cpuid_faulting:
        if rep.has_cpuid_faulting is False:
            return fatal(RR_FAULTING_REQUIRED)
        if rep.has_cpuid_faulting is None:
            warnings.append(
                f"a trace recorded on {rec.name} uses CPUID faulting, and rr replays it only"
                f" where CPUID faulting works; {rep.name}'s description does not say"
            )
    # !has_cpuid_faulting() && !cpuid_compatible(trace_in.cpuid_records())
    if rep.has_cpuid_faulting is not True:
        ours, theirs = _cpu_type(rep), _cpu_type(rec)
        if ours is not None and theirs is not None and ours != theirs:
            if rep.has_cpuid_faulting is False:
                return fatal(RR_CPUID_DIFFERS)
            warnings.append(
                f"CPUID.1:EAX & 0xf0ff0 differs ({theirs:#x} recorded, {ours:#x} here): rr"
                f" replays only if {rep.name} has CPUID faulting, which its description"
                f' does not say; otherwise: "{" ".join(RR_CPUID_DIFFERS.splitlines())}"'
            )

    # check_xsave_compatibility
    if not _xsave_enabled(rec):
        return RrVerdict(recorded, replayed, True, None, None, tuple(warnings))
    if not _xsave_enabled(rep):
        warnings.append(RR_NO_XSAVE)
        return RrVerdict(recorded, replayed, True, None, None, tuple(warnings))
    tracee_xcr0, our_xcr0 = rec.xcr0, rep.xcr0
    tracee_xsavec, our_xsavec = _has_xsavec(rec), _has_xsavec(rep)
    if tracee_xsavec and rep.subleaf(1) is None:
        # rr reads the replaying CPU itself; a description without sub-leaf 1 leaves it
        # open, so neither rr's XSAVEC warning nor the alignment comparison is decided.
        warnings.append(
            f"{rep.name}'s description has no CPUID.(0xD,1): whether it has XSAVEC is not"
            f' known (without it rr says "{RR_NO_XSAVEC}"), and alignment is not compared'
        )
    elif tracee_xsavec and not our_xsavec:
        warnings.append(RR_NO_XSAVEC)
    if tracee_xcr0 != our_xcr0:
        warnings.append(rr_xcr0_differs(tracee_xcr0, our_xcr0))
    check_alignment = tracee_xsavec and our_xsavec
    for feature in range(2, 64):
        if not tracee_xcr0 & our_xcr0 & 1 << feature:
            continue
        record = rec.subleaf(feature)
        data = rep.subleaf(feature)
        if (
            record is None
            or data is None
            or record[0] != data[0]
            or record[1] != data[1]
            or (check_alignment and (record[2] & 2) != (data[2] & 2))
        ):
            return fatal(rr_feature_differs(feature), feature)
    return RrVerdict(recorded, replayed, True, None, None, tuple(warnings))


# CRIU -------------------------------------------------------------------------------


def criu_verdict(machines: Sequence[Machine], dumped: int, restored: int) -> CriuVerdict:
    """CRIU restoring on `restored` a dump made on `dumped`: cpu_validate_features with
    opts.cpu_cap & CPU_CAP_FPU, its checks in order."""
    dumper, restorer = machines[dumped], machines[restored]
    image, host = dumper.criu, restorer.criu
    if image is not None and image.refusal is not None:
        # cpu_validate_cpuinfo refuses the image itself before cpu_validate_features
        return CriuVerdict(dumped, restored, False, image.refusal)
    if image is None or host is None:
        lacking = dumper if image is None else restorer
        return CriuVerdict(
            dumped, restored, None, f"not known: {lacking.name}'s description has no CRIU facts"
        )
    unknown: list[str] = []

    def missing(what: str, mine: object, theirs: object) -> None:
        whose = [m.name for m, value in ((dumper, mine), (restorer, theirs)) if value is None]
        unknown.append(f"{what} of {' and '.join(whose)}")

    if image.caps is not None and host.caps is not None:
        # __mismatch_fpu_bit(bit): in the image's capabilities and not on the host.
        mismatch = {name: image.caps[name] and not host.caps[name] for name in CRIU_FPU_CAPS}
        if any(mismatch.values()):
            flags = " ".join(f"{name}:{int(mismatch[name])}" for name in CRIU_FPU_CAPS)
            return CriuVerdict(
                dumped,
                restored,
                False,
                f"FPU feature required by image is not supported on host ({flags})",
            )
    else:
        missing("the fpu/fxsr/osxsave/xsaves bits", image.caps, host.caps)
    if image.xfeatures_mask is not None and host.xfeatures_mask is not None:
        extra = image.xfeatures_mask & ~host.xfeatures_mask
        if extra:
            return CriuVerdict(
                dumped, restored, False, f"CPU xfeatures has unsupported bits ({extra:#x})"
            )
    else:
        missing("xfeatures_mask", image.xfeatures_mask, host.xfeatures_mask)
    for field, words in (
        ("xsave_size", "CPU xsave size"),
        ("xsave_size_max", "CPU xsave max size"),
    ):
        ours, theirs = getattr(image, field), getattr(host, field)
        if ours is not None and theirs is not None:
            if ours != theirs:
                return CriuVerdict(dumped, restored, False, f"{words} mismatch ({ours}/{theirs})")
        else:
            missing(field, ours, theirs)
    if unknown:
        return CriuVerdict(dumped, restored, None, f"not known: {'; '.join(unknown)}")
    return CriuVerdict(dumped, restored, True, None)


# Saved state ------------------------------------------------------------------------


def image_checks(machines: Sequence[Machine]) -> tuple[ImageCheck, ...]:
    """Each saved state's in-use extended components against every other machine."""
    found = []
    for index, source in enumerate(machines):
        for saved in source.images:
            lost: list[tuple[int, int]] = []
            moved: list[tuple[int, int]] = []
            for target_index, target in enumerate(machines):
                if target_index == index:
                    continue
                lacking = elsewhere = 0
                for i in bits(saved.in_use & ~0b11):
                    there = target.placement(i)
                    if there is None:
                        lacking |= 1 << i
                    elif there != source.placement(i):
                        elsewhere |= 1 << i
                if lacking:
                    lost.append((target_index, lacking))
                if elsewhere:
                    moved.append((target_index, elsewhere))
            found.append(
                ImageCheck(
                    index,
                    saved.tid,
                    saved.label,
                    saved.event,
                    saved.in_use,
                    tuple(t for t, _ in lost),
                    tuple(t for t, _ in moved),
                    tuple(lost),
                    tuple(moved),
                )
            )
    return tuple(found)


# Advice -----------------------------------------------------------------------------


def _clearcpuid(drop: int) -> tuple[list[str], list[int]]:
    """The clearcpuid= names that drop these XCR0 bits, and the bits no name drops."""
    names: list[str] = []
    orphans: list[int] = []
    for bit in bits(drop):
        name = CLEARCPUID_FEATURE.get(bit)
        if name is None:
            orphans.append(bit)
        elif name not in names:
            names.append(name)
    return names, orphans


def _criu_instructions(criu: Sequence[CriuVerdict]) -> list[str]:
    """What a CRIU "restores" leaves out. `--cpu-cap=fpu` adds fpu to the options'
    default of fpu and ins (criu/config.c parse_cpu_cap ORs into CPU_CAP_DEFAULT), so
    cpu_validate_features also runs cpu_validate_ins_features after the FPU checks."""
    if not any(v.restores for v in criu):
        return []
    return [
        "CRIU: 'restores' says cpu_validate_features' FPU checks pass. `criu restore"
        " --cpu-cap=fpu` also checks instructions (the option adds fpu to CRIU's default"
        " of fpu,ins): every instruction-set bit of the dumping CPU's capability words"
        " must be on the restoring CPU, which compat does not compare; `--cpu-cap=fpu,^ins`"
        " leaves that check out."
    ]


def advice(
    machines: Sequence[Machine],
    portable: int,
    rr: Sequence[RrVerdict],
    criu: Sequence[CriuVerdict],
) -> tuple[str, ...]:
    said: list[str] = []
    if all(m.xcr0 == portable for m in machines):
        said.append(
            f"Every machine's XCR0 is {portable:#x} ({describe_mask(portable)}) with the same"
            " layout: standard-format state moves between them byte for byte."
        )
        return (*said, *_criu_instructions(criu))
    said.append(
        f"Portable XCR0: {portable:#x} ({describe_mask(portable)}), the largest XCR0 that"
        " every machine allows and whose every component has the same size, offset and"
        " alignment on all of them; state saved under it moves byte for byte."
    )
    for index, m in enumerate(machines):
        drop = m.xcr0 & ~portable
        if not drop:
            continue
        names, orphans = _clearcpuid(drop)
        where = f"[{index}] {m.name} (XCR0 {m.xcr0:#x})"
        parts = []
        if names:
            parts.append(
                f"boot Linux there with clearcpuid={','.join(names)} to bring XCR0 down to"
                f" {portable:#x}: the kernel's xsave_cpuid_features table drops an XCR0 bit"
                " whose CPU feature is off (clearcpuid= takes these names since Linux 5.19,"
                " taints the kernel and is meant for testing; in a VM, hide the same"
                " features from the guest's CPUID instead)"
            )
        if orphans:
            listed = ", ".join(f"{b} ({component(b).name})" for b in orphans)
            parts.append(f"no clearcpuid= name drops bit {listed}")
        said.append(f"On {where}: {'; '.join(parts)}.")
    if any(v.fatal_feature is not None for v in rr) or len({m.xcr0 for m in machines}) > 1:
        said.append(
            "rr: --disable-cpuid-features-xsave and --disable-avx-512 change only the CPUID"
            " values the tracee sees (sub-leaf 1 EAX; leaf 7 feature bits), not XCR0 and not"
            " the layout, so they do not avoid 'XSAVE offset/size/alignment differs'."
            f" Record where XCR0 is {portable:#x} (rr keeps the recording XCR0 in the trace)."
        )
    if any(v.restores is False for v in criu):
        said.append(
            "CRIU: cpuinfo.img is written and compared only when dump and restore both"
            " run with --cpu-cap. Its xsave_size is CPUID.(0xD,0).EBX, which follows XCR0;"
            " its xsave_size_max is CPUID.(0xD,0).ECX, the CPU's whatever XCR0 is (only a"
            " VM's CPU model changes it), so CRIU restores only between machines alike in"
            " both."
        )
    said += _criu_instructions(criu)
    said.append(
        f"For state already saved: `xcr0tool mask --xcr0 {portable:#x} IN -o OUT` gives"
        " it as if saved under the portable XCR0 (dropping what the targets lack), and"
        " `xcr0tool convert --layout TARGET IN -o OUT` re-lays it out with a target's"
        " layout (TARGET: a CPUID dump or `host --save` file of that machine, or a"
        " built-in profile)."
    )
    return tuple(said)


# The whole answer --------------------------------------------------------------------


def compat(machines: Sequence[Machine]) -> CompatResult:
    if len(machines) < 2:
        raise ValueError("compat compares at least two machines")
    for m in machines:
        check_machine(m)
    rows = component_rows(machines)
    portable = portable_xcr0(machines)
    pairs = [(i, j) for i in range(len(machines)) for j in range(len(machines)) if i != j]
    rr = tuple(rr_verdict(machines, i, j) for i, j in pairs)
    criu = tuple(criu_verdict(machines, i, j) for i, j in pairs)
    checks = image_checks(machines)
    warnings = tuple(f"[{i}] {m.name}: {note}" for i, m in enumerate(machines) for note in m.notes)
    return CompatResult(
        tuple(machines),
        rows,
        portable,
        rr,
        criu,
        checks,
        advice(machines, portable, rr, criu),
        warnings,
    )
