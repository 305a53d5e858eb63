"""xcr0tool: look at, compare and transform x86 XSAVE images.

The package is cut into layers; a module imports only its own layer and those below it
(tests/test_layers.py holds this, imports inside functions included):

    errors    the one error hierarchy
    files     reading what the user named (bounded) and writing outputs (whole or not at all)
    arch      architecture facts: the component catalogue, the legacy region, XCR0 and MXCSR rules
    model     Layout, the XSAVE image, registers, the signal frame's sw_bytes
    formats   bytes declared: XSAVE and ELF grammars, CPUID dumps, rr and CRIU codecs
    layouts   built-in profiles, layout files, choosing a layout for an image
    sources   what an input is: raw images and stdin, ELF cores, ptrace, this CPU
    ops       what the commands do: transforms, diff, validate, core rewriting
    render    text, tables and JSON for people and programs
    cli       the click commands, thin
"""

__version__ = "0.1.0"
