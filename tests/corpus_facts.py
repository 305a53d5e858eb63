"""What third-party projects' own tests assert about the cores of XCR0TOOL_CORPUS, for
every test that reads those cores (tests/oracles/test_corpus.py through the command
line, tests/unit/sources/test_elfcore.py through the core reader)."""

from __future__ import annotations

# LLDB's test program: fldpi; fldz; fld1; fldl2e; fldln2; fldl2t; fld1; fldlg2, so st0 is
# lg2 and st7 is pi; then vbroadcastss of eight constants into xmm0-7.
LLDB_ST = [
    "99 f7 cf fb 84 9a 20 9a fd 3f",
    "00 00 00 00 00 00 00 80 ff 3f",
    "fe 8a 1b cd 4b 78 9a d4 00 40",
    "ac 79 cf d1 f7 17 72 b1 fe 3f",
    "bc f0 17 5c 29 3b aa b8 ff 3f",
    "00 00 00 00 00 00 00 80 ff 3f",
    "00 00 00 00 00 00 00 00 00 00",
    "35 c2 68 21 a2 da 0f c9 00 40",
]
LLDB_XMM = [
    0x46643129,
    0x6486ED9C,
    0xD71FC207,
    0x254820A2,
    0xC4A85AEB,
    0x0B204149,
    0x4F8BF1F8,
    0xCD30F113,
]
