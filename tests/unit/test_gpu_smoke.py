"""bench/gpu_smoke.py end to end in its --cpu-smoke mode, importing nothing beyond torch, transformers,
peft, accelerate, pandas, pyarrow (and what they require) and flowrec."""

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("torch", "transformers", "peft", "accelerate", "pandas", "pyarrow")


def requirement_closure(roots) -> set[str]:
    """Normalised names of the distributions `roots` require, transitively, without optional extras."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            if ";" in req and "python_version" not in req and "sys_platform" not in req:
                continue
            todo.append(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))
    return seen


# Runs the smoke test and reports, for every top-level module it imported, the file that first
# imported it (the innermost frame outside importlib).
RUN_AND_LIST_MODULES = """
import json, runpy, sys, traceback
importers = {}
class Recorder:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in importers and top not in sys.modules:
            frames = [f.filename for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            importers[top] = frames[-1] if frames else ""
        return None
sys.meta_path.insert(0, Recorder())
sys.argv = ["gpu_smoke.py", "run", "--bundle", sys.argv[1], "--cpu-smoke"]
runpy.run_path("bench/gpu_smoke.py", run_name="__main__")
print("MODULES " + json.dumps(importers))
"""


def top_level_modules(distributions: set[str]) -> set[str]:
    """The importable top-level names that these distributions provide."""
    owners = md.packages_distributions()
    return {m for m, ds in owners.items() if {re.sub(r"[-_.]+", "-", d).lower() for d in ds} & distributions}


@pytest.mark.slow
def test_gpu_smoke_runs_on_the_cpu_with_only_the_allowed_packages(tmp_path):
    prepare = subprocess.run(
        [sys.executable, "bench/gpu_smoke.py", "prepare", "--out", str(tmp_path / "b"), "--samples", "64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    assert (tmp_path / "b/tokenizer").is_dir() and (tmp_path / "b/train.csv").is_file()
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, str(tmp_path / "b")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"bigrec +[\d.]+ samples/s +\d+ tokens/s", out)
    assert re.search(r"Flower/SFT step-time ratio [\d.]+", out)
    assert "resumed from step 2, 4 steps in the log" in out
    assert re.search(r"decode 4 prompts: [\d.]+ s/prompt, 10.0 titles each", out)
    importers = json.loads(out.split("MODULES ", 1)[1])
    allowed = top_level_modules(requirement_closure(ALLOWED))
    installed = set(md.packages_distributions()) - {"flowrec"}
    # A module outside the allowed packages' requirements may only be an optional import of one of
    # them (transformers tries PIL and scipy, torch dill, ... when installed); never one that flowrec
    # or the script asks for.
    direct = {
        m: f
        for m, f in importers.items()
        if m in installed and m not in allowed and ("/flowrec/" in f or f.endswith("gpu_smoke.py"))
    }
    assert not direct, f"gpu_smoke imports packages outside {ALLOWED} and their requirements: {direct}"
    optional_by = {m: f for m, f in importers.items() if m in installed and m not in allowed}
    assert all(any(f"/{a}/" in f for a in allowed) for f in optional_by.values()), optional_by
    assert not {"trl", "recbole", "snakemake", "matplotlib", "datasets"} & set(importers)
