"""A bad setting on a finished run costs nothing: it is refused when the workflow is parsed, before
Snakemake deletes any output, or, when only the job can find it out, the job's previous outputs are
put back when it fails (flowrec.last_good); once reverted nothing is planned again (issue 16)."""

import hashlib
import shutil
from pathlib import Path

import pytest

from flowrec import methods
from tests.integration.conftest import copy_repo, run_snakemake
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
    assert {p.split("/")[0] for p in before} == set(methods.trained())  # RQ3's aligned rows included
    for name, (text, message) in TYPOS.items():
        (workdir / "config" / name).write_text(text)
        # a real run, not a dry run: it must stop before any job starts
        proc = run_snakemake(workdir, "--configfile", "config/tiny.yaml", f"config/{name}", check=False)
        assert proc.returncode != 0, name
        assert message in proc.stdout + proc.stderr, (name, proc.stderr[-2000:])
        assert digest(tuned) == before, f"{name}: a tuned model changed or disappeared"
    assert planned(workdir) == [], "after reverting the typo, jobs are planned again"


def test_a_tuning_run_that_fails_puts_the_previous_tuned_models_back(tiny_workflow, tmp_path):
    """A learning rate no parse-time check refuses (any finite positive one is valid) makes every
    tuning job diverge at run time (flowrec.tune.divergence_checks): Snakemake deletes the tuned
    models of the jobs it starts, onerror puts them back byte for byte, with their metadata."""
    workdir = tmp_path / "tiny"
    shutil.copytree(tiny_workflow, workdir, symlinks=True)
    tuned = workdir / "results" / "ml100k" / "tune"
    before = digest(tuned)
    mtimes = {str(p.relative_to(tuned)): p.stat().st_mtime for p in tuned.rglob("*") if p.is_file()}
    (workdir / "config" / "diverge.yaml").write_text("tune:\n  learning_rate: 30000\n")
    proc = run_snakemake(workdir, "--configfile", "config/tiny.yaml", "config/diverge.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "training diverged" in out or "collapsed" in out, out[-4000:]
    # Snakemake deleted the outputs of the tuning jobs it started (when they started); they are back.
    restored = out.split("Restored the previous outputs of the failed jobs", 1)[-1]
    assert "results/ml100k/tune/flower/model" in restored, out[-4000:]
    assert digest(tuned) == before, "a tuned model is not back byte for byte"
    after = {str(p.relative_to(tuned)): p.stat().st_mtime for p in tuned.rglob("*") if p.is_file()}
    assert after == mtimes, "restored with new mtimes: what reads them would rerun"
    assert not (workdir / "results" / ".last_good").exists(), "the kept links outlive the run"
    # Reverted (the overlay dropped): nothing to do, the failed run's params are forgotten.
    assert planned(workdir) == [], "after reverting, jobs are planned again"


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    """config.yaml is checked by the Snakefile before Snakemake reads it; a --configfile is read by
    Snakemake before any workflow code runs, and only its --verbose traceback names file and line."""
    workdir = copy_repo(tmp_path)
    text = (workdir / "config.yaml").read_text()
    at = text.index("\n  epochs: 1\n")
    (workdir / "config.yaml").write_text(text[:at] + "\n   epochs: 1\n" + text[at + 13 :])
    line = text[:at].count("\n") + 2
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    assert f"config.yaml:{line}:4: YAML syntax error" in proc.stdout + proc.stderr, proc.stderr[-2000:]

    (workdir / "config.yaml").write_text(text)
    (workdir / "config" / "bad.yaml").write_text("tune:\n  learning_rate: 0.1\n   epochs: 2\n")
    proc = run_snakemake(workdir, "-n", "--configfile", "config/tiny.yaml", "config/bad.yaml", check=False)
    assert proc.returncode != 0
    assert "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr  # Snakemake's, no file
    proc = run_snakemake(
        workdir, "-n", "--verbose", "--configfile", "config/tiny.yaml", "config/bad.yaml", check=False
    )
    assert 'in "config/bad.yaml", line 3, column 10' in proc.stdout + proc.stderr, proc.stderr[-2000:]
