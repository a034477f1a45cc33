"""The layout of a study's ``save_path``, written once (as submitit's ``JobPaths``).

Every node of a cluster reads and writes these, so ``save_path`` must be on a shared file system.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

#: ``optuna.readable_by``: the umask of the package's processes and the mode of ``save_path``.
#: The setgid bit makes what is created inside take the folder's group (``chgrp`` it to a team's).
SHARING = {"user": (0o077, 0o700), "group": (0o027, 0o2750)}


@dataclasses.dataclass(frozen=True)
class StudyPaths:
    """Where each part of a study lives under ``save_path``.

    Example:
        >>> paths = StudyPaths(Path("/scratch/study"))
        >>> paths.hyper_copy
        PosixPath('/scratch/study/configs/hyper.yml')
    """

    root: Path

    @property
    def configs(self) -> Path:
        """The copies of ``hyper.yml`` and ``model.yml`` that workers read."""
        return self.root / "configs"

    @property
    def hyper_copy(self) -> Path:
        return self.configs / "hyper.yml"

    @property
    def model_copy(self) -> Path:
        return self.configs / "model.yml"

    @property
    def results_csv(self) -> Path:
        """One row per finished trial."""
        return self.root / "trial_results.csv"

    @property
    def log_file(self) -> Path:
        """The run's log with ``log: true``."""
        return self.root / "log.txt"

    @property
    def running(self) -> Path:
        """One file per RUNNING trial naming its worker (host, pid, job)."""
        return self.root / "running"

    @property
    def claim_lock(self) -> Path:
        """Held by a worker from its budget check until its new trial exists."""
        return self.root / ".claim.lock"

    @property
    def setup_lock(self) -> Path:
        """Held by ``optimize.py`` while it creates or loads the study and queues its grid."""
        return self.root / ".setup.lock"

    @property
    def queue_cache(self) -> Path:
        """The scheduler's queue as last read by any worker, shared so it is read once a minute."""
        return self.root / ".queue.json"

    @property
    def proxy_address(self) -> Path:
        """Where the study's storage proxy listens, written by the proxy, read by workers."""
        return self.root / "proxy.json"

    @property
    def proxy_token(self) -> Path:
        """The secret the study's proxy asks of every call (mode 0600, whatever the sharing)."""
        return self.root / ".proxy_token"

    @property
    def sweep_turn(self) -> Path:
        """When a worker last looked for dead workers' trials, so that one does it at a time."""
        return self.root / ".sweep.turn"

    @property
    def study_record(self) -> Path:
        """Which study this save_path holds: one study per save_path."""
        return self.root / "study.json"

    @property
    def stopped(self) -> Path:
        """Why the study stopped before ``n_trials`` (too many failures), while it is stopped."""
        return self.root / "stopped.json"

    @property
    def bad_nodes(self) -> Path:
        """Nodes left out of the study (``optuna.bad_node_failures``): a line each, its name, a
        tab, and the evidence as JSON; read by workers, job scripts, submissions and ``status``."""
        return self.root / "bad_nodes.tsv"

    @property
    def jobs(self) -> Path:
        """Job scripts and the scheduler's output files."""
        return self.root / "jobs"

    @property
    def jobs_record(self) -> Path:
        """The ids of submitted jobs, for ``status``, ``cancel`` and reloads."""
        return self.root / "jobs.json"

    @property
    def worker_logs(self) -> Path:
        """Local workers' stdout and stderr, one file each."""
        return self.root / "workers"

    @property
    def trials(self) -> Path:
        """A folder per trial of a command objective."""
        return self.root / "trials"

    @property
    def checkpoints(self) -> Path:
        """A folder per chain of trials: a trial and the trials that continue it."""
        return self.root / "checkpoints"

    @property
    def repro(self) -> Path:
        """What it takes to run each trial again: environments and applied configs, by content."""
        return self.root / "repro"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def mlruns(self) -> Path:
        """The default MLflow tracking store and its artifacts."""
        return self.root / "mlruns"

    @property
    def mlflow_lock(self) -> Path:
        """Held while the study's parent MLflow run is found or made."""
        return self.root / ".mlflow.lock"

    def worker_log(self, index: int) -> Path:
        return self.worker_logs / f"worker-{index}.log"

    def checkpoint(self, origin: int) -> Path:
        """The checkpoint folder of the chain that trial ``origin`` started."""
        return self.checkpoints / f"trial_{origin}"

    def repro_env(self, env_id: str) -> Path:
        return self.repro / f"env-{env_id}.json"

    def repro_configs(self, host: str, pid: int) -> Path:
        """One worker's applied model configs, a JSON line each."""
        return self.repro / f"configs-{host}-{pid}.jsonl"


def private_files(readable_by: str = "user") -> None:
    """Make what this process creates from now on readable by its user alone (or its group too)."""
    os.umask(SHARING[readable_by][0])


def keep_private(root: Path, readable_by: str = "user") -> None:
    """Make ``root`` (a study's ``save_path``) and everything this process creates from now on
    readable by its user alone, or by the user's group too (``readable_by="group"``); never by
    others. A ``root`` of another owner keeps its mode: its owner chose it.

    Example:
        >>> import stat, tempfile
        >>> root = Path(tempfile.mkdtemp()) / "study"
        >>> keep_private(root)
        >>> oct(stat.S_IMODE(root.stat().st_mode)), oct(os.umask(0o077))
        ('0o700', '0o77')
    """
    private_files(readable_by)
    root.mkdir(parents=True, exist_ok=True)
    mode = SHARING[readable_by][1]
    if root.stat().st_uid == os.getuid():
        root.chmod(mode)
