"""Would XRSTOR, XRSTORS or the Linux kernel take this XSAVE image? Every reason why not.

Rules are data (`RULES`): each has an id, a severity, the stages it belongs to, the
primary source it encodes, and a check that yields hits, each with the byte offset and
the value that break the rule. `validate` runs the rules of the stages that apply and
returns a `Report`; it never raises for a bad image, only for a missing input.

The package: model.py (Subject, Target, Finding, Report, severities and stages),
registry.py (the `@rule` decorator), the rules beside their functions in
instructions.py, linux.py and surprises.py, engine.py (running them) and targets.py
(defaults from the image and this machine; reading subjects through sources/open.py).

Stages, that is what loads the image:

    xrstor        the XRSTOR instruction (CPL 3)
    xrstors       the XRSTORS instruction (CPL 0, supervisor components)
    fxrstor       what rt_sigreturn falls back to when a frame's sw_bytes are not valid
    linux-ptrace  PTRACE_SETREGSET with NT_X86_XSTATE (regset.c xstateregs_set)
    sigframe      rt_sigreturn's look at struct _fpx_sw_bytes (signal.c)
    surprise      what loads, but not as one would think

Severities: `fault` (the instruction raises #GP), `reject` (the kernel refuses the
buffer; for a signal frame, it ignores the extended state), `warning` (loads, but
surprises). A report with a fault or a reject is not accepted.

What this machine's CPU (AMD Zen 4) says where the written sources are silent or
disagree, checked by tests/oracles/test_validate_cpu.py:

- Compacted form: XSTATE_BV[63] = 1 faults, although XCOMP_BV[63] is set too. The
  SDM's "a bit in XCOMP_BV is 0 and the corresponding bit in XSTATE_BV is 1" does not
  cover bit 63 and Bochs (cpu/xsave.cc) lets it through; here it counts as outside.
- Compacted form: MXCSR is loaded only when RFBM[1] and XSTATE_BV[1] are set, as the
  SDM's pseudocode says; Bochs loads it whenever RFBM[1] is set.
- Standard form: MXCSR is loaded whenever RFBM[1] or RFBM[2] is set, even with SSE and
  AVX in init state, and a later XSAVE writes it back with XSTATE_BV[2:1] = 0.
- Standard form: bytes 536-575 of the header are not checked; 520-535 are.
"""

from __future__ import annotations

from xcr0tool.ops.validate.engine import RULES, RULES_BY_ID, run_stage, validate
from xcr0tool.ops.validate.instructions import mxcsr_loaded
from xcr0tool.ops.validate.model import (
    ALL_ONES,
    CHECKS,
    CPU,
    FAULT,
    FXRSTOR,
    LINUX_PTRACE,
    REJECT,
    SEVERITIES,
    SIGFRAME,
    SIGRETURN,
    SURPRISE,
    WARNING,
    XRSTOR,
    XRSTORS,
    Finding,
    Hit,
    Report,
    Rule,
    Severity,
    Subject,
    Target,
)
from xcr0tool.ops.validate.targets import (
    HostFacts,
    host_facts,
    load_subjects,
    make_target,
    subject_from_bytes,
)

__all__ = [
    "ALL_ONES", "CHECKS", "CPU", "FAULT", "FXRSTOR", "LINUX_PTRACE", "REJECT", "RULES",
    "RULES_BY_ID", "SEVERITIES", "SIGFRAME", "SIGRETURN", "SURPRISE", "WARNING", "XRSTOR",
    "XRSTORS", "Finding", "Hit", "HostFacts", "Report", "Rule", "Severity", "Subject",
    "Target", "host_facts", "load_subjects", "make_target", "mxcsr_loaded", "run_stage",
    "subject_from_bytes", "validate",
]  # fmt: skip
