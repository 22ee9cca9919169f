"""Keep a script that read Parquet through pandas from aborting at interpreter exit.

pd.read_parquet(path) hands pyarrow a Python file object. In the project's venv (pyarrow 23.0.1) a
three-line script reading a results file with it exited 134, "terminate called without an active
exception", after its last line in 4 runs of 50 (apache/arrow#34314, #50482); pyarrow 17.0.0 to
22.0.0 did the same (1 or 2 of 50 each), so no pyarrow that numpy 1.26 allows avoids it. pq.read_table
on the path: 0 of 50; on an open file object: 26 of 50. The abort, in gdb: an Arrow pool thread drops
the last reference to the scan's ParquetFileFragment after the read returned; its PyReadableFile
releases the Python file object, which needs the GIL (PyGILState_Ensure); the interpreter is
finalising by then, so the thread is made to exit (pthread_exit), and the unwind through a noexcept
destructor calls std::terminate.

The mitigation waits for that release at exit: an atexit handler sleeps (releasing the GIL) while a
closed Python file object that nothing in Python refers to is alive, at most MAX_WAIT_S. A fixed pause
is not enough on a loaded machine (1 abort in 100 runs with 0.1 s), nor is a gc.collect (it found
nothing to collect). `python -m flowrec.arrow_exit install` writes PTH_FILE into the environment's
site-packages (the Makefile does it when it builds the venv): its line (standard library only)
registers the handler at every interpreter start there, so a script or notebook that imports only pandas is covered, as is one
importing flowrec; `flowrec.arrow_exit.register()` does the same by hand elsewhere.

Why a .pth and not code run by `import flowrec`: every stage's `code` input holds flowrec/__init__.py
(flowrec.code_deps), so a change there would rerun every finished rule; the stages themselves read
Parquet without threads (flowrec.io.read_parquet) and need no mitigation.
"""

from __future__ import annotations

import atexit
import site
import sys
from pathlib import Path

PTH_FILE = "flowrec-arrow-exit.pth"

# The exit handler, standard library only, as source: the .pth line runs it with exec, and this module
# runs the same text below, so there is one definition. The line must not import flowrec: a package
# imported at interpreter start is fixed for the whole process, and a checkout that puts its own src/
# on sys.path later (rules/common.smk, a worktree) would get the installed one instead.
HANDLER_SOURCE = """
import gc, io, sys, time, types

MAX_WAIT_S = 5.0  # longest wait; a finished read's cleanup takes milliseconds
POLL_S = 0.01


def files_held_outside_python():
    # Closed Python file objects that nothing in Python refers to: only C++ can hold them, here Arrow's
    # PyReadableFile of a finished read, whose destructor still needs the GIL.
    # type(o), not isinstance: an object may fake __class__, and the ABC check then raises.
    files = [o for o in gc.get_objects() if issubclass(type(o), io.IOBase) and o.closed]
    held = 0
    for obj in files:
        referrers = [r for r in gc.get_referrers(obj) if r is not files and not isinstance(r, types.FrameType)]
        held += not referrers
    return held


def wait_for_arrow(max_wait_s=MAX_WAIT_S):
    # Sleep (releasing the GIL, so that Arrow's threads can take it) until Arrow holds no Python file
    # object, at most max_wait_s; the seconds waited. Nothing to do where pyarrow was never imported.
    if "pyarrow" not in sys.modules:
        return 0.0
    start = time.perf_counter()
    try:
        while files_held_outside_python() and time.perf_counter() - start < max_wait_s:
            time.sleep(POLL_S)
    except Exception:  # an exit handler of every interpreter in the venv: never add an error of its own
        pass
    return time.perf_counter() - start
"""

_handler: dict = {}
exec(HANDLER_SOURCE, _handler)
files_held_outside_python = _handler["files_held_outside_python"]
wait_for_arrow = _handler["wait_for_arrow"]

# site executes a .pth line that starts with `import`.
PTH_LINE = f"import atexit; _h = {{}}; exec({HANDLER_SOURCE!r}, _h); atexit.register(_h['wait_for_arrow'])\n"


def register() -> None:
    """Run wait_for_arrow at exit (once, however often this is called)."""
    atexit.unregister(wait_for_arrow)
    atexit.register(wait_for_arrow)


def install(site_packages: str | Path | None = None) -> Path:
    """Write PTH_FILE into `site_packages` (default: the running interpreter's first site-packages)."""
    folder = Path(site_packages) if site_packages is not None else Path(site.getsitepackages()[0])
    path = folder / PTH_FILE
    path.write_text(PTH_LINE, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m flowrec.arrow_exit install [SITE_PACKAGES]`: print the path written."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "install" or len(args) > 2:
        print("usage: python -m flowrec.arrow_exit install [SITE_PACKAGES]", file=sys.stderr)
        return 2
    print(install(args[1] if len(args) == 2 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
