# The previous outputs of failing jobs (flowrec.last_good): kept when a run starts, put back when a job
# fails, discarded when the run succeeds; the Snakefile's onstart/onerror/onsuccess call these.
from snakemake.io import is_flagged

from flowrec import last_good


def _last_good_jobs():
    """(job, outputs) of every job this run will start; temp() outputs are deleted by design and
    update() ones are never deleted, so neither is kept."""
    for job in workflow.dag.needrun_jobs():
        outputs = [str(f) for f in job.output if not is_flagged(f, "temp") and not is_flagged(f, "update")]
        wildcards = ",".join(f"{k}={v}" for k, v in job.wildcards_dict.items())
        yield f"{job.rule.name}[{wildcards}]" if wildcards else job.rule.name, outputs


def _last_good_warn(action, err):
    # The safety net never fails a run: a read-only or full results folder gets the workflow's own error.
    print(f"Warning: could not {action} {last_good.ROOT} ({err})", file=sys.stderr)


def keep_last_good():
    """onstart: hard-link the existing outputs of the jobs to run into results/.last_good."""
    try:
        kept = last_good.keep(_last_good_jobs(), last_good.PersistenceStore(workflow.persistence))
    except OSError as err:
        _last_good_warn("keep the previous outputs of the jobs to run in", err)
        return
    if kept:
        print(f"Kept the {len(kept)} existing outputs of the jobs to run in {last_good.ROOT} "
              "(put back if their job fails)", file=sys.stderr)


def restore_last_good():
    """onerror: put back the previous outputs (and metadata) of every job that failed."""
    try:
        restored = last_good.restore(last_good.PersistenceStore(workflow.persistence))
        last_good.discard()
    except OSError as err:
        _last_good_warn("restore from", err)
        return
    if restored:
        print("Restored the previous outputs of the failed jobs (revert the change and nothing of "
              "theirs reruns):\n    " + "\n    ".join(restored), file=sys.stderr)


def discard_last_good():
    """onsuccess: every job finished, the kept outputs are no longer needed."""
    try:
        last_good.discard()
    except OSError as err:
        _last_good_warn("remove", err)
