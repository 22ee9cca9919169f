"""One process per device with torch.distributed: rank/world queries, the process group, torchrun.

A stage that runs on several devices writes its job as JSON and starts
`python -m torch.distributed.run --standalone --nproc_per_node=N -m <module> job.json`; each process
joins the group (nccl on CUDA, gloo on CPU) and works on its share; rank 0 writes the outputs.
"""

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

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
    subprocess.run(cmd, check=True)
