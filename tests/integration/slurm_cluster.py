"""A real single-node SLURM cluster on localhost, for tests/integration/test_slurm.py (and by hand).

Debian's packages (slurmctld, slurmd, slurm-client, munge) are installed with apt-get when missing.
What works on this kind of machine, and the traps, are in ../shared/design/slurm.md; in short:
- slurm.conf must be at the default path /etc/slurm/slurm.conf: the executor plugin's jobstep strips
  SLURM_* variables (SLURM_CONF included) before its inner srun;
- there is no slurmdbd, so `sacct` is disabled: the profile uses `slurm-status-command: squeue`, and
  MinJobAge keeps finished jobs visible to squeue for an hour;
- no cgroups: proctrack/linuxproc and task/none.

The node advertises `cpus` CPUs, `gpus` GPUs (a gpu GRES whose device files are copies of /dev/null)
and `real_memory_mb` MB (SlurmdParameters=config_overrides: slurmd reports the configured values, not
what it measures), so that the requests of profiles/slurm, sized for a GPU node, are scheduled as on a
GPU cluster. Nothing enforces them (no cgroups), and the jobs run on the CPU: the test checks scheduling and the workflow, not GPU code.
The defaults (16 CPUs, 4 GPUs, 256 GB) let up to four of the profile's training jobs run at once: the
tiny jobs are mostly single-threaded start-up, so on a 2-core machine that shortens the test's run.

By hand (as root):
    python tests/integration/slurm_cluster.py start /tmp/flowrec-slurm
    snakemake --configfile config/tiny.yaml --profile profiles/slurm
    python tests/integration/slurm_cluster.py stop /tmp/flowrec-slurm
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
MARKER = "# Written by flowrec tests/integration/slurm_cluster.py"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged"]
MUNGE_RUN = Path("/run/munge")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here (not root, packages not installable, daemons do not start); says why."""


def _run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def ensure_installed() -> None:
    """Install the Debian packages when a binary is missing; raise SlurmUnavailable with the reason."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("SLURM is not installed and installing it with apt-get needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get (not a Debian system)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    proc = _run(install, timeout=600, env=env)
    if proc.returncode != 0:  # a stale package index: update once and retry
        _run(["apt-get", "update"], timeout=600, env=env)
        proc = _run(install, timeout=600, env=env)
    if proc.returncode != 0 or not all(shutil.which(b) for b in BINARIES):
        raise SlurmUnavailable(f"`{' '.join(install)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalSlurm:
    """Start munged, slurmctld and slurmd on localhost; stop them by PID file in reverse order.

    state_dir holds the daemons' state, spool, logs and PID files. Use as a context manager.
    """

    def __init__(self, state_dir: Path, cpus: int = 16, real_memory_mb: int = 262144, gpus: int = 4):
        self.state_dir = Path(state_dir).resolve()
        self.cpus = cpus
        self.real_memory_mb = real_memory_mb
        self.gpus = gpus
        self.started: list[tuple[str, Path]] = []  # (daemon, pid file) in start order

    # -- configuration ----------------------------------------------------------------------------------
    def slurm_conf(self) -> str:
        s = self.state_dir
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        return f"""{MARKER} for a single-node test cluster.
# State, spool, logs and PID files live under {s}.
ClusterName=flowrec-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd: Snakemake polls squeue, and the test lists the run's jobs with squeue at its end,
# so finished jobs stay visible for an hour (>= 3x the profile's first status check delay)
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation={s}/slurmctld
SlurmdSpoolDir={s}/slurmd
SlurmctldPidFile={s}/slurmctld.pid
SlurmdPidFile={s}/slurmd.pid
SlurmctldLogFile={s}/slurmctld.log
SlurmdLogFile={s}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb}{gres} State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def fake_gpu_files(self) -> list[Path]:
        """Character devices standing for the GPUs: slurmd counts a gpu GRES only through its device files.

        They are copies of /dev/null (major 1, minor 3) under state_dir; where mknod is not allowed, the
        kernel's own /dev/null, /dev/zero and /dev/full stand in (up to three GPUs).
        """
        folder = self.state_dir / "fakegpu"
        folder.mkdir(parents=True, exist_ok=True)
        files = [folder / f"gpu{i}" for i in range(self.gpus)]
        try:
            for f in files:
                if not f.is_char_device():
                    f.unlink(missing_ok=True)
                    os.mknod(f, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            files = [Path(d) for d in ("/dev/null", "/dev/zero", "/dev/full")][: self.gpus]
            self.gpus = len(files)
        return files

    def gres_conf(self) -> str:
        lines = [f"{MARKER}: fake GPUs (copies of /dev/null); jobs run on the CPU"]
        lines += [
            f"NodeName=localhost Name=gpu File={f}" for f in (self.fake_gpu_files() if self.gpus else [])
        ]
        return "\n".join(lines) + "\n"

    def _write_configs(self) -> None:
        for path in (SLURM_CONF, GRES_CONF):
            if path.exists() and MARKER not in path.read_text(errors="replace"):
                raise SlurmUnavailable(
                    f"{path} exists and was not written by this script; not overwriting it"
                )
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        gres_conf = self.gres_conf()  # first: it may lower self.gpus
        SLURM_CONF.write_text(self.slurm_conf())
        GRES_CONF.write_text(gres_conf)

    # -- daemons ------------------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], pid_file: Path, user: str | None = None) -> None:
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        proc = _run(cmd, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid = _read_pid(pid_file)
            if pid and _alive(pid):
                self.started.append((name, pid_file))
                return
            time.sleep(0.2)
        log = self.state_dir / f"{name}.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SlurmUnavailable(
            f"{name} did not start ({' '.join(cmd)} -> {proc.returncode}): {proc.stderr[-1000:]} {tail}"
        )

    def start(self) -> LocalSlurm:
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd/munged needs root")
        ensure_installed()
        if _run(["pgrep", "-x", "slurmctld"]).returncode == 0:
            raise SlurmUnavailable(
                "a slurmctld is already running on this machine; not starting a second one"
            )
        for sub in ("slurmctld", "slurmd", "munge"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_configs()
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        shutil.chown(self.state_dir / "munge", "munge", "munge")
        munge_pid = MUNGE_RUN / "munged.pid"
        try:
            self._spawn(
                "munged",
                [
                    "munged",
                    "--force",
                    f"--pid-file={munge_pid}",
                    f"--log-file={MUNGE_RUN}/munged.log",
                ],
                munge_pid,
                user="munge",
            )
            self._spawn("slurmctld", ["slurmctld"], self.state_dir / "slurmctld.pid")
            self._spawn("slurmd", ["slurmd", "-N", "localhost"], self.state_dir / "slurmd.pid")
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the node accepts jobs (sinfo shows it idle or mixed)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=20)
            state = proc.stdout.strip() or proc.stderr.strip()
            if proc.returncode == 0 and state.rstrip("*") in {"idle", "mixed", "allocated"}:
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not come up within {timeout:.0f} s (sinfo: {state!r})")

    def cancel_all_jobs(self, timeout: float = 30) -> None:
        """scancel every job of this (test-only) cluster, so that no job step outlives slurmd."""
        jobs = _run(["squeue", "-h", "-o", "%i"], timeout=20).stdout.split()
        if not jobs:
            return
        _run(["scancel", *jobs], timeout=20)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _run(["squeue", "-h", "-o", "%i"], timeout=20).stdout.strip():
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel what still runs, stop our daemons by PID file in reverse order, remove our config files."""
        if any(name == "slurmctld" for name, _ in self.started):
            self.cancel_all_jobs()
        for name, pid_file in reversed(self.started):
            pid = _read_pid(pid_file)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                print(f"{name} (pid {pid}) ignored SIGTERM for 20 s; sending SIGKILL", file=sys.stderr)
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        for path in (SLURM_CONF, GRES_CONF):  # ours only: they point into state_dir
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_from_files(state_dir: Path) -> None:
    """`stop` from the command line: the PID files of a cluster started by `start` in another process."""
    cluster = LocalSlurm(state_dir)
    cluster.started = [
        ("munged", MUNGE_RUN / "munged.pid"),
        ("slurmctld", cluster.state_dir / "slurmctld.pid"),
        ("slurmd", cluster.state_dir / "slurmd.pid"),
    ]
    cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("state_dir", type=Path, help="folder for the daemons' state, logs and PID files")
    parser.add_argument("--cpus", type=int, default=16, help="CPUs the node advertises")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs the node advertises (GRES count)")
    parser.add_argument("--memory-mb", type=int, default=262144, help="RealMemory the node advertises")
    args = parser.parse_args(argv)
    if args.action == "stop":
        _stop_from_files(args.state_dir)
        return 0
    try:
        LocalSlurm(args.state_dir, cpus=args.cpus, real_memory_mb=args.memory_mb, gpus=args.gpus).start()
    except SlurmUnavailable as err:
        print(f"SLURM unavailable: {err}", file=sys.stderr)
        return 1
    print(f"SLURM is up (state in {args.state_dir}); stop it with: {sys.argv[0]} stop {args.state_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
