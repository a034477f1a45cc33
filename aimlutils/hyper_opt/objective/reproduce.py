"""What it takes to run a trial again, kept at almost no cost per trial.

Per worker, once: the environment (Python, platform, package versions, the objective file's hash
and git commit with a dirty flag, the GPU model) goes to ``save_path/repro/env-<id>.json``, named
by its content, so the workers of one environment share one file. Per trial: the model config as
``train`` received it is one JSON line of the worker's own ``save_path/repro/configs-<host>-<pid>.jsonl``
(one ``write`` on a file kept open: a file per trial would halve a cheap trial's throughput), under
an id that is a hash of its content, and the trial's one record write
(:mod:`aimlutils.hyper_opt.coordination.records`) carries the two ids and the worker's sampler
seed. Host, node, process and job id are in that record already.

``optimize.py report`` writes the whole of it next to ``best.yml``; ``optimize.py rerun`` runs a
trial again from it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import yaml
from optuna.trial import FrozenTrial

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination.records import RETRY_OF_ATTR, read_record
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.search_space import samplers

logger = logging.getLogger(__name__)

#: The key of a trial's record that holds ``{"env": id, "config": id, "seed": n}``.
REPRO_KEY = "repro"
#: Distributions whose versions are recorded when installed (the first found of each group).
PACKAGES = (
    ("optuna",),
    ("aimlutils",),
    ("numpy",),
    ("torch",),
    ("tensorflow", "tensorflow-cpu"),
    ("keras",),
    ("lightning",),
    ("scikit-learn",),
)


def content_id(data: Any) -> str:
    """A short hash of JSON-able ``data``, the same for equal data in any key order.

    Example:
        >>> content_id({"a": 1, "b": [2]}) == content_id({"b": [2], "a": 1})
        True
    """
    return _text_id(_canonical_json(data))


def _canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def git_state(path: Path) -> dict[str, Any] | None:
    """The commit of the repository holding ``path`` and whether it has uncommitted changes;
    ``None`` outside a repository (or without git)."""
    if shutil.which("git") is None:
        return None
    folder = path if path.is_dir() else path.parent

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "root": git("rev-parse", "--show-toplevel")}


def package_versions() -> dict[str, str]:
    """Versions of the packages a trial's result may depend on, those installed."""
    versions = {}
    for names in PACKAGES:
        for name in names:
            try:
                versions[name] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def gpu_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The models of this worker's GPUs: ``nvidia-smi``, else torch when the objective loaded it."""
    visible = [g.strip() for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if not visible or visible in (["-1"], ["NoDevFiles"]):
        return []
    if shutil.which("nvidia-smi") is not None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        rows = [[f.strip() for f in line.split(",", 2)] for line in out.splitlines() if line.count(",") >= 2]
        names = [name for index, uuid, name in rows if index in visible or uuid in visible]
        if names:
            return names
    torch = sys.modules.get("torch")  # never imported here: that is the objective's to do
    try:
        if torch is not None and torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a driver that answers oddly: the record goes without the name
        logger.debug("torch could not name the GPUs", exc_info=True)
    return []


def objective_facts(cfg: RunConfig, objective_class: type | None = None) -> dict[str, Any]:
    """The objective's file (or command, or class), its hash and its git state."""
    path: Path | None = cfg.objective
    facts: dict[str, Any] = {}
    if objective_class is not None:
        source = inspect.getsourcefile(objective_class)
        path = Path(source) if source else None
        facts["class"] = f"{objective_class.__module__}.{objective_class.__qualname__}"
    elif cfg.command is not None:
        facts["command"] = list(cfg.command.words)
        # A script named by an absolute path is what runs; relative ones run from the trial's folder.
        path = next((Path(w) for w in cfg.command.words if Path(w).is_absolute() and Path(w).is_file()), None)
    if path is not None:
        facts.update(path=str(path), sha256=file_sha256(path), git=git_state(path))
    return facts


def environment(cfg: RunConfig, objective_class: type | None = None) -> dict[str, Any]:
    """What a trial's result may depend on besides its parameters and config, for this worker."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "objective": objective_facts(cfg, objective_class),
        "gpus": gpu_names(),
    }


class Recorder(Protocol):
    """What an Objective tells about each trial it runs, and what the trial's record keeps of it."""

    def note_config(self, number: int, conf: Mapping[str, Any]) -> None: ...

    def fields(self, number: int) -> dict[str, Any]: ...


def _write_once(path: Path, text: str) -> None:
    """Write ``path`` unless it exists; content-named files never change, so a race is harmless."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # threads too
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class TrialRecorder:
    """One worker's part: its environment written once, each trial's config as it is applied.

    :meth:`note_config` is called by :class:`~aimlutils.hyper_opt.objective.base.BaseObjective`
    with the config it gives ``train``; :meth:`fields` is what goes into the trial's record.
    A file that cannot be written (a full disk) costs the trial its record's ids, nothing more.
    """

    def __init__(
        self,
        cfg: RunConfig,
        worker_index: int = 0,
        n_workers: int = 1,
        objective_class: type | None = None,
    ) -> None:
        self.paths = cfg.paths
        seed = samplers.sampler_spec(cfg.optuna.sampler, n_workers, worker_index).get("seed")
        self.seed = seed if isinstance(seed, int) else None
        self.env = environment(cfg, objective_class)
        self.env_id: str | None = content_id(self.env)
        try:
            _write_once(self.paths.repro_env(self.env_id), json.dumps(self.env, indent=2, sort_keys=True))
        except OSError as err:
            logger.warning("could not write the environment record in %s: %s", self.paths.repro, err)
            self.env_id = None
        self._configs: dict[int, str] = {}
        self._written: set[str] = set()
        self._file = self.paths.repro_configs(socket.gethostname(), os.getpid())
        self._out: IO[str] | None = None

    def note_config(self, number: int, conf: Mapping[str, Any]) -> None:
        try:
            text = _canonical_json(conf)
        except (TypeError, ValueError) as err:
            logger.warning("could not keep trial %d's config in %s: %s", number, self._file, err)
            return
        config_id = _text_id(text)
        if config_id not in self._written:
            try:
                if self._out is None:
                    self._file.parent.mkdir(parents=True, exist_ok=True)
                    self._out = open(self._file, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
                # The text its id was made of (one encoding of the config per trial, not two).
                self._out.write(f'{{"id": "{config_id}", "config": {text}}}\n')
                self._out.flush()  # on disk before training: a worker killed mid-trial keeps it
            except (OSError, TypeError, ValueError) as err:
                logger.warning("could not keep trial %d's config in %s: %s", number, self._file, err)
                return
            self._written.add(config_id)
        self._configs[number] = config_id

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def fields(self, number: int) -> dict[str, Any]:
        """The record's ``repro`` entry for trial ``number`` (and forget its config id)."""
        out = {"env": self.env_id, "config": self._configs.pop(number, None), "seed": self.seed}
        return {k: v for k, v in out.items() if v is not None}


def config_id_of(conf: Mapping[str, Any]) -> str:
    """The id of an applied model config (its content), as :class:`TrialRecorder` names its file."""
    return content_id(conf)


def read_env(paths: StudyPaths, env_id: str | None) -> dict[str, Any] | None:
    if not env_id:
        return None
    try:
        data = json.loads(paths.repro_env(env_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_config(paths: StudyPaths, config_id: str | None) -> dict[str, Any] | None:
    """The applied model config of id ``config_id``, from the workers' ``configs-*.jsonl``."""
    if not config_id:
        return None
    key = f'{{"id": "{config_id}"'
    for path in sorted(paths.repro.glob("configs-*.jsonl")):
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(key):
                        data = json.loads(line).get("config")
                        return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            continue
    return None


def reproduction(paths: StudyPaths, trial: FrozenTrial, metrics: Sequence[str]) -> dict[str, Any]:
    """Everything known about how ``trial`` ran, for ``report/reproduce/trial_N.yml``."""
    record = read_record(trial)
    repro = record.get(REPRO_KEY) or {}
    worker = record.get("worker") or {}
    values = trial.values or []
    start, end = trial.datetime_start, trial.datetime_complete
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "values": dict(zip(metrics, values, strict=False)) if values else None,
        "params": dict(trial.params),
        "continues": trial.user_attrs.get(RETRY_OF_ATTR),
        "sampler_seed": repro.get("seed"),
        "ran": {
            **{k: worker.get(k) for k in ("host", "node", "job_id", "pid", "worker")},
            "cuda_visible_devices": worker.get("gpu"),
            "started": start.isoformat() if start else None,
            "completed": end.isoformat() if end else None,
        },
        "environment": read_env(paths, repro.get("env")),
        "model_config": read_config(paths, repro.get("config")),
        "rerun": f"python optimize.py rerun {paths.hyper_copy} {trial.number}",
    }


def write_reproductions(
    paths: StudyPaths, trials: Sequence[FrozenTrial], metrics: Sequence[str], folder: Path
) -> list[Path]:
    """One ``trial_N.yml`` per trial in ``folder`` (emptied first: the best trials change)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = []
    for trial in trials:
        data = reproduction(paths, trial, metrics)
        path = folder / f"trial_{trial.number}.yml"
        header = (
            f"# What it takes to run trial {trial.number} again; '{data['rerun']}' does it.\n"
            "# environment and model_config are null for a trial whose worker kept no record of them.\n"
        )
        path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written
