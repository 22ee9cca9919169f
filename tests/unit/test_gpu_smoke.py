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


RUN_AND_LIST_MODULES = """
import json, runpy, sys
sys.argv = ["gpu_smoke.py", "run", "--bundle", sys.argv[1], "--cpu-smoke"]
runpy.run_path("bench/gpu_smoke.py", run_name="__main__")
print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


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
    modules = json.loads(out.split("MODULES ", 1)[1])
    allowed = requirement_closure(ALLOWED) | {"flowrec"}
    owners = md.packages_distributions()
    third_party = {
        m: {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(m, [])}
        for m in modules
        if m not in sys.stdlib_module_names and not m.startswith("_") and m not in ("flowrec", "__main__")
    }
    outside = {m: d for m, d in third_party.items() if d and not d & allowed}
    assert not outside, f"gpu_smoke imports packages outside {ALLOWED} and their requirements: {outside}"
    assert not {"trl", "recbole", "snakemake", "matplotlib", "datasets"} & set(modules)
