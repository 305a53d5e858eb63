"""xcr0tool: look at, compare and transform x86 XSAVE images."""

__version__ = "0.1.0"
