"""A whole rr trace is read in memory flat in its frame count: `decode` of every frame
(text, --json, --summary), `diff` and `validate` hold no frame's image once it is shown
(sources/rrtrace.py's TraceImages, ops/diff.py's StreamedPairs, ops/check.py's
StreamedChecks, render/output.py's streamed text and JSON).

The bound is on growth, not time: the command on a trace of SMALL and of BIG signal
frames, each in a fresh process, the peak RSS of each read by wait4. Before, the tool held
every frame's image and then its whole JSON or text: 13 KiB a frame for the summary,
38 KiB for --json, 100 KiB for text, 25 KiB for diff, 15 KiB for validate (AMX images of
11,008 bytes). Now what stays is a summary line a frame (about 600 bytes) and a frame
index or a status. The bound, 2 KiB a frame (4.7 MiB over the 2,400 frames between), is
3 times that and 6 times under the old cheapest form; it would also catch holding each
frame's XSAVE bytes on a machine with AVX-512 (2,696 bytes) or AMX. Other machines'
allocators and Python versions move a peak by a MiB or two, not by five: measured here,
the growth from 2,000 to 20,000 frames is under 1 MiB for text and --json, 2.5 MiB for
diff and validate, 11 MiB for the summary. Each test runs where xdist puts it (the
traces cost a tenth of a second to make).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import make_rr_trace as mk
import pytest
from paths import REPO

SMALL, BIG = 600, 3_000
PER_FRAME = 2048  # bytes of peak RSS a frame may add (the module's docstring: why)


def tools() -> None:
    try:
        mk.require_capnp()
        mk.rr_schema()
    except mk.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tools()
    records = mk.host_cpuid_records()
    made = tmp_path_factory.mktemp("rr-memory")
    small, big = made / "small", made / "big"
    mk.write_signal_trace(small, records, SMALL)
    mk.write_signal_trace(big, records, BIG)
    return small, big


def peak_rss(*args: str) -> tuple[int, int]:
    """(bytes of output, peak RSS in bytes) of `xcr0tool ARGS` in a fresh process."""
    with subprocess.Popen(
        [sys.executable, "-m", "xcr0tool", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        size = 0
        while chunk := proc.stdout.read(1 << 20):
            size += len(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    assert proc.returncode == 0, args
    return size, usage.ru_maxrss * 1024  # KiB on Linux


@pytest.mark.parametrize(
    "form",
    [["decode"], ["decode", "--json"], ["decode", "--summary"], ["diff", "--json"], ["validate"]],
    ids=["text", "json", "summary", "diff", "validate"],
)
def test_a_whole_trace_is_read_flat_in_its_frames(
    traces: tuple[Path, Path], form: list[str]
) -> None:
    small, big = traces
    twice = form[0] == "diff"  # the trace with itself
    small_out, small_rss = peak_rss(*form, str(small), *([str(small)] if twice else []))
    big_out, big_rss = peak_rss(*form, str(big), *([str(big)] if twice else []))
    assert big_out > small_out * (BIG / SMALL) * 0.9  # every frame was shown
    grown = big_rss - small_rss
    bound = PER_FRAME * (BIG - SMALL)
    assert grown < bound, (
        f"{' '.join(form)}: peak RSS {small_rss >> 20} MiB for {SMALL} frames,"
        f" {big_rss >> 20} MiB for {BIG}: {grown // (BIG - SMALL)} bytes a frame"
    )


def test_a_trace_rewritten_while_read_is_refused(tmp_path: Path) -> None:
    """The frames are checked when the source is opened and read again when shown: a
    reading that finds other frames says so, and shows none of them as the trace's."""
    tools()
    from xcr0tool.errors import InputError
    from xcr0tool.sources.open import open_source

    records = mk.host_cpuid_records()
    trace = tmp_path / "trace"
    mk.write_signal_trace(trace, records, 5)
    source = open_source(str(trace))
    assert len(source.images) == 5
    assert source.thread_ids() == ["1", "3", "5", "7", "9"]
    assert [image.event for image in source.images] == [1, 3, 5, 7, 9]
    assert source.images[2].event == 5 and source.images[-1].event == 9
    with pytest.raises(IndexError):
        source.images[5]
    fewer = tmp_path / "fewer"
    mk.write_signal_trace(fewer, records, 3)
    (trace / "events").write_bytes((fewer / "events").read_bytes())
    with pytest.raises(InputError, match="the events file changed while it was read"):
        list(source.images)
