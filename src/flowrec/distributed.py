"""One process per device with torch.distributed: rank/world queries, the process group, torchrun.

A stage that runs on several devices writes its job as JSON and starts
`python -m torch.distributed.run --standalone --nproc_per_node=N -m <module> job.json`; each process
joins the group (nccl on CUDA, gloo on CPU) and works on its share; rank 0 writes the outputs.
"""

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from flowrec.logs import LOG_FILE_ENV, current_log_file, log_to

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_device(explicit: str | None = None) -> torch.device:
    """`explicit`, else this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if explicit:
        return torch.device(explicit)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@contextmanager
def process_group() -> Iterator[None]:
    """Join the torchrun process group when started with WORLD_SIZE > 1 (else do nothing)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        if distributed:
            dist.destroy_process_group()


def torchrun(module: str, spec: Path, nproc: int) -> None:
    """Run `python -m module spec` as `nproc` processes on this machine (torch.distributed.run)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", module, str(spec)]
    log.info("launching: %s", " ".join(cmd))
    env = dict(os.environ)
    if (path := current_log_file()) is not None:
        env[LOG_FILE_ENV] = path  # the workers append to the rule's log (job_main)
    subprocess.run(cmd, check=True, env=env)


def launch_job(
    job, run: Callable, report: Callable[[dict], None], module: str, spec: Path, nproc: int
) -> None:
    """Run the dataclass `job` here (`report(run(job))`, nproc 1) or as `nproc` torchrun processes of
    `python -m module spec`, the job written to `spec` as JSON for them (removed afterwards)."""
    if nproc <= 1:
        report(run(job))
        return
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(job), indent=2))
    try:
        torchrun(module, spec, nproc)
    finally:
        spec.unlink(missing_ok=True)


def job_main(
    argv: list[str], module: str, job_type: type, run: Callable, report: Callable[[dict], None]
) -> None:
    """The torchrun entry point of `module`: read the job from argv[0], run it in the process group,
    and `report` the summary on rank 0."""
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m {module} JOB.json   (normally through torchrun)")
    log_to(os.environ.get(LOG_FILE_ENV), append=True)
    job = job_type(**json.loads(Path(argv[0]).read_text()))
    with process_group():
        summary = run(job)
        if world()[0] == 0:
            report(summary)
