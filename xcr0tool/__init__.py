"""xcr0tool: look at, compare and transform x86 XSAVE images.

The package is cut into layers; a module imports only its own layer and those below it
(tests/project/test_layers.py holds this, imports inside functions included):

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

The package root sits above every layer: it is the library surface, what a batch tool
needs, each name imported on first use (module __getattr__), so that `import xcr0tool`
costs nothing and a tool pays only for what it touches:

    source = xcr0tool.open_source("core.4242")          # or "pid:N", "self", "-"
    for image in source.images:
        print(image.tid, hex(image.xcr0), hex(xcr0tool.register_map(image)["ymm0"]))

README's "Library" section has more, run as tests.
"""

from __future__ import annotations

from importlib import import_module

# Not typing.TYPE_CHECKING: importing typing alone would double what `import xcr0tool`
# costs. mypy treats any constant of this name as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

# name -> (module, attribute): the library surface.
_EXPORTS = {
    # inputs
    "open_source": ("xcr0tool.sources.open", "open_source"),
    "SourceResult": ("xcr0tool.sources.open", "SourceResult"),
    "build_image": ("xcr0tool.layouts.choose", "build_image"),
    "XsaveImage": ("xcr0tool.model.image", "XsaveImage"),
    # layouts
    "Layout": ("xcr0tool.model.layout", "Layout"),
    "load_layout": ("xcr0tool.layouts.files", "resolve_layout_option"),
    "profile_layout": ("xcr0tool.layouts.profiles", "profile_layout"),
    # registers
    "Register": ("xcr0tool.model.registers", "Register"),
    "registers": ("xcr0tool.model.registers", "registers"),
    "register_map": ("xcr0tool.model.registers", "register_map"),
    # transforms
    "to_compacted": ("xcr0tool.ops.transforms", "to_compacted"),
    "to_standard": ("xcr0tool.ops.transforms", "to_standard"),
    "mask": ("xcr0tool.ops.transforms", "mask"),
    # what the commands answer, as calls
    "decode": ("xcr0tool.ops.inspect", "decode"),
    "diff_images": ("xcr0tool.ops.diff", "diff_images"),
    "diff_sources": ("xcr0tool.ops.diff", "diff_sources"),
    "compare": ("xcr0tool.ops.inspect", "compare"),
    "validate": ("xcr0tool.ops.check", "check_source"),
    # errors
    "XcrError": ("xcr0tool.errors", "XcrError"),
    "InputError": ("xcr0tool.errors", "InputError"),
    "LayoutError": ("xcr0tool.errors", "LayoutError"),
    "UsageError": ("xcr0tool.errors", "UsageError"),
}

__all__ = [  # the keys of _EXPORTS (a test checks), spelt out for tools that read them
    "InputError",
    "Layout",
    "LayoutError",
    "Register",
    "SourceResult",
    "UsageError",
    "XcrError",
    "XsaveImage",
    "__version__",
    "build_image",
    "compare",
    "decode",
    "diff_images",
    "diff_sources",
    "load_layout",
    "mask",
    "open_source",
    "profile_layout",
    "register_map",
    "registers",
    "to_compacted",
    "to_standard",
    "validate",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'xcr0tool' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and editors see; nothing is imported at run time
    from typing import Any

    from xcr0tool.errors import InputError, LayoutError, UsageError, XcrError
    from xcr0tool.layouts.choose import build_image
    from xcr0tool.layouts.files import resolve_layout_option as load_layout
    from xcr0tool.layouts.profiles import profile_layout
    from xcr0tool.model.image import XsaveImage
    from xcr0tool.model.layout import Layout
    from xcr0tool.model.registers import Register, register_map, registers
    from xcr0tool.ops.check import check_source as validate
    from xcr0tool.ops.diff import diff_images, diff_sources
    from xcr0tool.ops.inspect import compare, decode
    from xcr0tool.ops.transforms import mask, to_compacted, to_standard
    from xcr0tool.sources.open import SourceResult, open_source
