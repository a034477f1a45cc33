"""Safe on a shared cluster: a storage password stays out of every file, message and command line
the package writes; save_path is private (or shared with the group alone); the storage proxy
answers only the study's own workers."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aimlutils.hyper_opt.api import read_config
from aimlutils.hyper_opt.config import ConfigError, locations
from aimlutils.hyper_opt.storage import parse_storage
from aimlutils.hyper_opt.storage.proxy import ProxyAddress
from tests.conftest import MODEL, ROOT, hyper_config, needs_module, run_optimize, service_url
from tests.test_job_scripts import PBS, SLURM


def _secret() -> str:
    return f"pw-{uuid.uuid4().hex[:12]}"


def _files_with(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _cmdlines_with(secret: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue  # the process ended
        if secret.encode() in text:
            found.append(text.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _start(hyper: Path, model: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=hyper.parent,
        env=env,
    )


def _study(hyper: Path, model: Path) -> optuna.Study:
    cfg = read_config(hyper, model)
    return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage.url())


@pytest.mark.parametrize("given", ["inline", "environment"])
def test_a_postgresql_password_is_in_no_file_message_or_command_line(study_files, held, given, monkeypatch):
    base = service_url("postgresql")  # postgresql://postgres@127.0.0.1:5432/test; trust accepts any
    secret = _secret()
    env = dict(os.environ)
    if given == "inline":
        url = base.replace("postgres@", f"postgres:{secret}@")
    else:
        env["TEST_DB_PASSWORD"] = secret
        monkeypatch.setenv("TEST_DB_PASSWORD", secret)  # for this test's own reading of the config
        url = base.replace("postgres@", "postgres:${TEST_DB_PASSWORD}@")
    hyper, model = study_files(storage=url, n_trials=4, test=held.knobs(2))
    proc = _start(hyper, model, "--workers", "2", env=env)
    try:
        held.wait(2)  # both workers are inside a trial now
        assert _cmdlines_with(secret) == []
    finally:
        held.release()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert secret not in out, out
    told = out.count("the password is written in hyper.yml")
    assert told == (1 if given == "inline" else 0), out
    shown = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), "status", str(hyper)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert shown.returncode == 0 and secret not in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    save_path = hyper.parent / "results"
    assert _files_with(save_path, secret) == []
    # The workers read the copy, with the password as a reference to their environment.
    assert "${" in (save_path / "configs" / "hyper.yml").read_text()
    name = read_config(hyper, model).study_name
    study = optuna.load_study(study_name=name, storage=base.replace("postgres@", f"postgres:{secret}@"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4


@pytest.mark.parametrize(("name", "section"), [("slurm", SLURM), ("pbs", PBS)])
def test_job_scripts_and_submit_commands_name_the_password_never_hold_it(study_files, name, section):
    secret = _secret()
    url = f"postgresql://postgres:{secret}@db.example:5432/test"
    hyper, model = study_files(storage=url, sections={name: section})
    dry = run_optimize(hyper, model, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert secret not in dry.stdout + dry.stderr
    if name == "pbs":  # qsub hands a job only what -v names; the name, not the value
        assert "-v AIMLUTILS_JOB_INDEX=0,AIMLUTILS_STORAGE_PASSWORD " in dry.stdout, dry.stdout
    assert not (hyper.parent / "results").exists() or _files_with(hyper.parent / "results", secret) == []


def test_a_variable_the_url_names_must_be_set_before_anything_starts(tmp_path):
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py")
    hyper["optuna"]["storage"] = "postgresql://me:${SURELY_NOT_SET_ANYWHERE}@db.example/test"
    (tmp_path / "objective.py").write_text("")
    with pytest.raises(ConfigError) as err:
        read_config(hyper, dict(MODEL))
    text = str(err.value)
    assert "optuna.storage" in text and "SURELY_NOT_SET_ANYWHERE" in text and "~/.pgpass" in text, text
    assert not (tmp_path / "results").exists()


def test_the_drivers_own_password_variables_are_read_where_the_url_has_none(tmp_path):
    mysql = parse_storage("mysql://root@h:3306/db", None, tmp_path, tmp_path)
    assert mysql.url({"MYSQL_PWD": "pw1"}) == "mysql+pymysql://root:pw1@h:3306/db"
    assert mysql.variables({"MYSQL_PWD": "pw1"}) == ["MYSQL_PWD"]
    redis = parse_storage("redis://h:6379/0", None, tmp_path, tmp_path)
    assert redis.url({"REDISCLI_AUTH": "pw2"}) == "redis://:pw2@h:6379/0"
    # A password in the URL wins over the variable, as with libpq.
    given = parse_storage("mysql://root:mine@h/db", None, tmp_path, tmp_path)
    assert given.url({"MYSQL_PWD": "other"}) == "mysql+pymysql://root:mine@h/db"
    assert redis.url({}) == "redis://h:6379/0" and redis.variables({}) == []


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("readable_by", ["user", "group"])
def test_save_path_is_private_or_shared_with_the_group_never_with_others(study_files, readable_by):
    hyper, model = study_files(n_trials=4, readable_by=readable_by)
    done = run_optimize(hyper, model, "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    modes = _modes(hyper.parent / "results")
    assert len(modes) > 10, modes
    assert {k: oct(m) for k, m in modes.items() if m & 0o007} == {}
    # Lock files and the other hidden files workers coordinate through: their owner's alone.
    locks = {
        k: m for k, m in modes.items() if k.endswith((".lock", ".lockf")) or Path(k).name.startswith(".")
    }
    assert {".claim.lock", "trial_results.csv.lock"} <= set(locks), sorted(modes)
    assert {k: oct(m) for k, m in locks.items() if m != 0o600} == {}, locks
    others = {k: m for k, m in modes.items() if k not in locks}
    if readable_by == "user":
        assert {k: oct(m) for k, m in others.items() if m & 0o070} == {}
    else:
        assert {k: oct(m) for k, m in others.items() if not m & 0o040} == {}
        assert (hyper.parent / "results").stat().st_mode & stat.S_ISGID


def test_the_proxy_needs_its_extra_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.setattr(locations, "_installed", lambda module: module not in ("grpc", "google.protobuf"))
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", proxy=True)
    hyper["optuna"]["storage"] = "postgresql://postgres@127.0.0.1:5432/test"
    (tmp_path / "objective.py").write_text("")
    with pytest.raises(ConfigError) as err:
        read_config(hyper, dict(MODEL))
    assert "optuna.proxy" in str(err.value) and "aimlutils[proxy]" in str(err.value), str(err.value)
    assert not (tmp_path / "results").exists()


def refuses_strangers(address: ProxyAddress) -> None:
    """Optuna's own client, without the study's token, can neither read nor write through the
    proxy at ``address``."""
    import grpc

    stranger = optuna.storages.GrpcStorageProxy(host=address.host, port=address.port)
    try:
        for attempt in (
            stranger.get_all_studies,
            lambda: stranger.create_new_study([optuna.study.StudyDirection.MINIMIZE], "intruder"),
            lambda: stranger.delete_study(1),
        ):
            with pytest.raises(grpc.RpcError) as err:
                attempt()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stranger.close()


def test_a_client_without_the_token_gets_nothing_from_the_proxy(study_files, held):
    needs_module("grpc")
    url = service_url("postgresql")
    hyper, model = study_files(storage=url, n_trials=4, proxy=True, test=held.knobs(2))
    proc = _start(hyper, model, "--workers", "2", env=dict(os.environ))
    save_path = hyper.parent / "results"
    try:
        held.wait(2)  # the workers reached their trials through the proxy
        address = ProxyAddress.read(save_path / "proxy.json")
        assert address is not None and address.host == "127.0.0.1"
        token = save_path / ".proxy_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        refuses_strangers(address)
    finally:
        held.release()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    study = _study(hyper, model)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert "intruder" not in [s.study_name for s in optuna.get_all_study_summaries(url)]
    log = (save_path / "log.txt").read_text()
    assert log.count("without the study's token; later refusals are counted") == 1, log
    assert "refused 3 call(s) without the study's token" in log, log


def test_a_url_given_on_the_command_line_keeps_its_variable(study_files, monkeypatch):
    monkeypatch.setenv("TEST_DB_PASSWORD", "from-the-environment")
    hyper, model = study_files()
    url = "postgresql://me:${TEST_DB_PASSWORD}@db.example/test"
    for key in ("optuna.storage", "hydra.sweeper.storage"):  # the Hydra key resolves ${key.path}s
        cfg = read_config(hyper, model, overrides=[f"{key}={url}"])
        assert cfg.hyper["optuna"]["storage"] == "postgresql+psycopg://me:${TEST_DB_PASSWORD}@db.example/test"
        assert cfg.storage.url() == "postgresql+psycopg://me:from-the-environment@db.example/test"


def test_in_a_job_the_proxy_listens_on_the_nodes_address_not_every_interface(tmp_path):
    from aimlutils.hyper_opt.base_objective import BaseObjective
    from aimlutils.hyper_opt.launchers.proxy_server import _addresses

    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", proxy=True)
    del hyper["optuna"]["objective"]
    hyper["optuna"]["storage"] = "postgresql://postgres@127.0.0.1:5432/test"
    cfg = read_config(hyper, dict(MODEL), objective=BaseObjective)
    node = socket.gethostname()
    assert _addresses(cfg, in_job=True) == (node, node)
    assert _addresses(cfg, in_job=False) == ("127.0.0.1", "127.0.0.1")
    with socket.socket() as sock:  # the node's own address: one of its interfaces, not 0.0.0.0
        sock.bind((node, 0))
        assert sock.getsockname()[0] != "0.0.0.0"  # noqa: S104 - what it must not be
