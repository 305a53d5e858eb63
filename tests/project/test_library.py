"""The library surface: README's "Library" examples run as written, every name in
`xcr0tool.__all__` resolves, and `import xcr0tool` alone imports none of the layers."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from bare_python import run_bare
from paths import REPO

import xcr0tool


def library_examples() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_has_library_examples() -> None:
    assert len(library_examples()) >= 3


@pytest.mark.parametrize("index", range(len(library_examples())))
def test_readme_library_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(library_examples()[index], f"README.md example {index + 1}", "exec"), {})
    assert printed.getvalue() or index == 1  # the examples that print, print


def test_readme_examples_print_what_they_say() -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(library_examples()[2], {"__name__": "example"})
    assert "no-such-core no such file" in printed.getvalue()


def test_all_is_the_export_table_and_every_name_resolves() -> None:
    exports = xcr0tool._EXPORTS  # type: ignore[attr-defined]
    assert sorted(xcr0tool.__all__) == sorted(["__version__", *exports])
    for name in xcr0tool.__all__:
        assert getattr(xcr0tool, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xcr0tool.nope  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_cheap() -> None:
    """`import xcr0tool` imports no layer (and not typing): names load on first use."""
    # What the package's own two imports bring (`from __future__ import annotations`,
    # `from importlib import import_module`) is loaded first: an editable install's path
    # hook has it already, and from a regular install it would be counted here.
    probe = (
        "import sys; import __future__, importlib; before = set(sys.modules);"
        " import xcr0tool; print(sorted(m for m in set(sys.modules) - before))"
    )
    assert run_bare(probe).strip() == "['xcr0tool']"
