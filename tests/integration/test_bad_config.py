"""A bad setting on a finished run costs nothing: it is refused when the workflow is parsed, before
Snakemake deletes any output, and once reverted nothing is planned again (issue 16)."""

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import run_snakemake
from tests.integration.test_reruns import planned

pytestmark = pytest.mark.slow

# Typos in tuning settings, each refused naming its key (flowrec.config_checks).
TYPOS = {
    "micro_batch.yaml": ("tune:\n  micro_batch_size: 3\n", "tune.batch_size (4) must be a multiple"),
    "nan_lr.yaml": ("tune:\n  learning_rate: .nan\n", "tune.learning_rate: nan is not a finite number"),
    "inf_lambda.yaml": ("flower:\n  lambda: .inf\n", "flower.lambda: inf is not a finite number"),
    "beams.yaml": ("decode:\n  num_beams: 100000\n", "decode.num_beams: 100000 exceeds"),
    "model.yaml": (
        "model:\n  name_or_path: ./no/such/model\n",
        "model.name_or_path: model `./no/such/model`",
    ),
}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the tuned models), by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_typo_in_a_tuning_setting_leaves_every_tuned_model_in_place(tiny_workflow, tmp_path):
    workdir = tmp_path / "tiny"
    shutil.copytree(tiny_workflow, workdir, symlinks=True)
    tuned = workdir / "results" / "ml100k" / "tune"
    before = digest(tuned)
    assert {p.split("/")[0] for p in before} == {"bigrec", "ifairlrs", "flower"}
    for name, (text, message) in TYPOS.items():
        (workdir / "config" / name).write_text(text)
        # a real run, not a dry run: it must stop before any job starts
        proc = run_snakemake(workdir, "--configfile", "config/tiny.yaml", f"config/{name}", check=False)
        assert proc.returncode != 0, name
        assert message in proc.stdout + proc.stderr, (name, proc.stderr[-2000:])
        assert digest(tuned) == before, f"{name}: a tuned model changed or disappeared"
    assert planned(workdir) == [], "after reverting the typo, jobs are planned again"
