"""Firecracker CPU fingerprints and custom CPU templates: their CPUID, as tables.

Both are JSON in the shape of Firecracker's `CustomCpuTemplate`
(src/vmm/src/cpu_config/x86_64/custom_cpu_template.rs): a list of `cpuid_modifiers`,
each {"leaf": "0x..", "subleaf": "0x..", "flags": int, "modifiers": [{"register":
"eax" | "ebx" | "ecx" | "edx", "bitmap": "0b..."}]}. A fingerprint
(`cpu-template-helper fingerprint dump`, src/cpu-template-helper/src/fingerprint/dump.rs)
holds the guest's whole CPUID so under "guest_cpu_config", every bit fixed; a template
may write `x` for "keep the bit the vCPU already has".

The bitmap grammar is Firecracker's `RegisterValueFilter` deserializer
(src/vmm/src/cpu_config/templates.rs): an optional "0b", then characters read from the
last (bit 0) to the first; `_` is skipped, `0`/`1` fix a bit, `x` leaves it; bits not
written are left as well; more than 32 bits, or any other character, is an error.
Applying a template is `apply_template_to_cpuid` (src/vmm/src/cpu_config/x86_64/mod.rs):
for each leaf the template names, the vCPU must have that (leaf, sub-leaf) or it is an
error, and each register becomes (value & !filter) | bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xcr0tool.errors import InputError

Regs = tuple[int, int, int, int]
CpuidTable = Mapping[tuple[int, int], Regs]  # (leaf, sub-leaf) -> (eax, ebx, ecx, edx)

REGISTERS = ("eax", "ebx", "ecx", "edx")
_BITS = 32


@dataclass(frozen=True)
class Bitmap:
    """One register's modifier: the bits it fixes (`mask`) and their values (`bits`)."""

    mask: int
    bits: int

    def apply(self, value: int) -> int:
        return (value & ~self.mask & 0xFFFFFFFF) | self.bits

    @property
    def complete(self) -> bool:
        return self.mask == 0xFFFFFFFF


@dataclass(frozen=True)
class LeafModifier:
    leaf: int
    subleaf: int
    flags: int
    registers: tuple[tuple[str, Bitmap], ...]  # in the file's order


@dataclass(frozen=True)
class CpuTemplate:
    """A template or a fingerprint's guest configuration: its CPUID modifiers in order."""

    modifiers: tuple[LeafModifier, ...]
    fingerprint: bool  # the file was a fingerprint (the modifiers sat in guest_cpu_config)
    details: tuple[tuple[str, str], ...] = ()  # fingerprint facts: firecracker_version, ...


def parse_bitmap(text: str, where: str) -> Bitmap:
    digits = text.removeprefix("0b")
    mask = bits = 0
    position = 0
    for char in reversed(digits):
        if char == "_":
            continue
        if position == _BITS:
            raise ValueError(f"{where}: bitmap {text!r} is longer than {_BITS} bits")
        if char in "01":
            mask |= 1 << position
            bits |= int(char) << position
        elif char != "x":
            raise ValueError(f"{where}: bitmap {text!r} has {char!r} (0, 1, x or _ only)")
        position += 1
    return Bitmap(mask, bits)


def _number(value: object, where: str) -> int:
    """Firecracker's deserialize_from_str_u32: a string with a 0b or 0x prefix."""
    if not isinstance(value, str):
        raise ValueError(f'{where}: expected a string such as "0xd", got {value!r}')
    for prefix, base in (("0b", 2), ("0x", 16)):
        if value.startswith(prefix):
            try:
                number = int(value[2:], base)
            except ValueError:
                break
            if number >> _BITS:
                raise ValueError(f"{where}: {value} does not fit in 32 bits")
            return number
    raise ValueError(f"{where}: {value!r} is not a 0x or 0b number")


def _leaf(entry: object, index: int) -> LeafModifier:
    where = f"cpuid_modifiers[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object")
    leaf = _number(entry.get("leaf"), f"{where}.leaf")
    subleaf = _number(entry.get("subleaf"), f"{where}.subleaf")
    flags = entry.get("flags", 0)
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise ValueError(f"{where}.flags: expected an integer")
    modifiers = entry.get("modifiers")
    if not isinstance(modifiers, list):
        raise ValueError(f"{where}.modifiers: expected a list")
    registers = []
    for number, modifier in enumerate(modifiers):
        here = f"{where}.modifiers[{number}]"
        if not isinstance(modifier, dict):
            raise ValueError(f"{here}: expected an object")
        register = modifier.get("register")
        if register not in REGISTERS:
            raise ValueError(f"{here}.register: {register!r} is not one of eax, ebx, ecx, edx")
        bitmap = modifier.get("bitmap")
        if not isinstance(bitmap, str):
            raise ValueError(f"{here}.bitmap: expected a string")
        registers.append((str(register), parse_bitmap(bitmap, f"{here}.bitmap")))
    return LeafModifier(leaf, subleaf, flags, tuple(registers))


def parse_cpu_template(data: object, source: str) -> CpuTemplate:
    """A fingerprint ({"guest_cpu_config": {...}, ...}) or a custom CPU template."""
    fingerprint = isinstance(data, dict) and "guest_cpu_config" in data
    config = data.get("guest_cpu_config") if isinstance(data, dict) else None
    body = config if fingerprint else data
    if not isinstance(body, dict) or not isinstance(body.get("cpuid_modifiers"), list):
        raise InputError(
            source,
            'not a Firecracker CPU template or fingerprint: no "cpuid_modifiers" list',
        )
    try:
        modifiers = tuple(_leaf(entry, i) for i, entry in enumerate(body["cpuid_modifiers"]))
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
    details: tuple[tuple[str, str], ...] = ()
    if fingerprint and isinstance(data, dict):
        details = tuple(
            (key, str(data[key]))
            for key in ("firecracker_version", "kernel_version", "microcode_version")
            if isinstance(data.get(key), str)
        )
    return CpuTemplate(modifiers, fingerprint, details)


def fingerprint_cpuid(template: CpuTemplate, source: str) -> dict[tuple[int, int], Regs]:
    """A fingerprint's guest CPUID: every leaf it lists, with all four registers and every
    bit fixed, as `cpu-template-helper` writes them (template/dump/x86_64.rs,
    cpuid_to_modifiers)."""
    table: dict[tuple[int, int], Regs] = {}
    for modifier in template.modifiers:
        values = [0, 0, 0, 0]
        named = {register for register, _ in modifier.registers}
        if named != set(REGISTERS):
            missing = ", ".join(r for r in REGISTERS if r not in named)
            raise InputError(
                source,
                f"CPUID leaf {modifier.leaf:#x} sub-leaf {modifier.subleaf:#x} lacks {missing}:"
                " a fingerprint lists all four registers",
            )
        for register, bitmap in modifier.registers:
            if not bitmap.complete:
                raise InputError(
                    source,
                    f"CPUID leaf {modifier.leaf:#x} sub-leaf {modifier.subleaf:#x} {register}"
                    " has bits marked x: a template, not a fingerprint",
                )
            values[REGISTERS.index(register)] = bitmap.bits
        table[(modifier.leaf, modifier.subleaf)] = (values[0], values[1], values[2], values[3])
    return table


def apply_cpu_template(
    cpuid: Mapping[tuple[int, int], Regs], template: CpuTemplate, source: str
) -> dict[tuple[int, int], Regs]:
    """The vCPU's CPUID once Firecracker has applied `template` to it."""
    table = dict(cpuid)
    for modifier in template.modifiers:
        key = (modifier.leaf, modifier.subleaf)
        if key not in table:
            # Firecracker refuses too: CpuConfigurationError::CpuidFeatureNotSupported.
            raise InputError(
                source,
                f"the template modifies CPUID leaf {modifier.leaf:#x} sub-leaf"
                f" {modifier.subleaf:#x}, which the vCPU does not have",
            )
        values = list(table[key])
        for register, bitmap in modifier.registers:
            slot = REGISTERS.index(register)
            values[slot] = bitmap.apply(values[slot])
        table[key] = (values[0], values[1], values[2], values[3])
    return table
