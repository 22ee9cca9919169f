"""Every stage runs without Snakemake, and every rule's `code` input covers what its stage imports.

Each stage module is run as `python -m flowrec.stages.X --help` would run it (runpy, as __main__, no
`snakemake` object) in a fresh interpreter; the same interpreter then lists the flowrec modules that
were imported, which must all be in the files flowrec.code_deps derives for the rule (so editing any of
them reruns the rule).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowrec.code_deps import module_files

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
STAGES = sorted(p.stem for p in (SRC / "flowrec" / "stages").glob("*.py") if p.stem != "__init__")

PROBE = """
import json, runpy, sys
sys.argv = [{module!r}, "--help"]
code = 0
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    code = exit_.code or 0
loaded = sorted(m for m in sys.modules if m == "flowrec" or m.startswith("flowrec."))
print("\\n@@" + json.dumps({{"code": code, "modules": loaded}}))
"""


def run_help(module: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert "@@" in proc.stdout, f"{module} --help crashed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    text, _, result = proc.stdout.rpartition("\n@@")
    probe = json.loads(result)
    return probe["code"], text, probe["modules"]


def test_every_stage_is_found():
    assert len(STAGES) >= 10, STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_and_code_inputs(stage):
    module = f"flowrec.stages.{stage}"
    code, text, loaded = run_help(module)
    assert code == 0, f"{module} --help exited {code}:\n{text}"
    assert "usage:" in text and "--" in text, text
    declared = {p.resolve() for p in module_files(module, SRC)}
    for name in loaded:
        path = SRC.joinpath(*name.split("."))
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        assert source.resolve() in declared, (
            f"{module} imports {name} ({source}), which the rule's code input would miss"
        )


def test_code_deps_follow_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / "flowrec"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from flowrec import other\n")
    (pkg / "other.py").write_text("import os\n")
    (pkg / "entry.py").write_text("from flowrec.sub import leaf\n")
    names = {p.relative_to(tmp_path).as_posix() for p in module_files("flowrec.entry", tmp_path)}
    assert names == {
        "flowrec/__init__.py",
        "flowrec/entry.py",
        "flowrec/sub/__init__.py",
        "flowrec/sub/leaf.py",
        "flowrec/other.py",  # imported inside a function: it runs when the stage does
    }
    with pytest.raises(FileNotFoundError, match="flowrec.missing"):
        module_files("flowrec.missing", tmp_path)
