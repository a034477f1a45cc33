"""A broken environment is one clear message naming the file, key or URL (password hidden), exit 2,
no traceback and nothing created; during a study, a problem that is not the trial's own is logged
and the study goes on."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.cli import main
from aimlutils.hyper_opt.coordination import ResultsCsv
from aimlutils.hyper_opt.worker import Worker
from tests.conftest import MODEL, OBJECTIVE, hyper_config, service_url
from tests.test_api import Quadratic


def _files(tmp_path: Path, **optuna_keys: object) -> tuple[Path, Path, Path]:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    save_path = tmp_path / "results"
    hyper = hyper_config(save_path, tmp_path / "objective.py", **optuna_keys)
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(MODEL))
    return tmp_path / "hyper.yml", tmp_path / "model.yml", save_path


def _refused(capsys: pytest.CaptureFixture[str], hyper: Path, model: Path, save_path: Path) -> str:
    assert main([str(hyper), str(model), "--workers", "1"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert not save_path.exists()  # nothing created
    return captured.err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:1/test", "127.0.0.1:1/test does not answer"),
        ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0 does not answer"),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db", 'database "no_such_db" does not exist'),
        ("mysql://root:s3cret@127.0.0.1:3306/test", "Access denied"),
    ],
    ids=["database-down", "redis-down", "missing-database", "wrong-password"],
)
def test_a_storage_that_does_not_answer_is_named_with_its_password_hidden(tmp_path, capsys, url, expected):
    if "5432" in url or "3306" in url:
        service_url("postgresql" if "postgres" in url else "mysql")  # the server itself must run
    hyper, model, save_path = _files(tmp_path, storage=url)
    err = _refused(capsys, hyper, model, save_path)
    assert "- optuna.storage:" in err and expected in err
    assert "s3cret" not in err


def test_a_save_path_under_a_file_cannot_be_created(tmp_path, capsys):
    (tmp_path / "blocker").write_text("")
    hyper, model, _ = _files(tmp_path)
    data = yaml.safe_load(hyper.read_text())
    data["optuna"]["save_path"] = str(tmp_path / "blocker" / "results")
    hyper.write_text(yaml.safe_dump(data))
    err = _refused(capsys, hyper, model, tmp_path / "blocker" / "results")
    assert "- optuna.save_path:" in err and "blocker is a file" in err


def test_a_read_only_save_path_is_refused(tmp_path, capsys):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow a read-only mount")
    try:
        hyper, model, _ = _files(tmp_path)
        data = yaml.safe_load(hyper.read_text())
        data["optuna"]["save_path"] = str(readonly / "results")
        hyper.write_text(yaml.safe_dump(data))
        err = _refused(capsys, hyper, model, readonly / "results")
        assert "- optuna.save_path:" in err and "is not writable" in err
    finally:
        subprocess.run(["umount", str(readonly)], check=False)


def test_a_model_config_that_is_a_directory(tmp_path, capsys):
    hyper, model, save_path = _files(tmp_path)
    model.unlink()
    model.mkdir()
    err = _refused(capsys, hyper, model, save_path)
    assert f"{model} is a directory" in err


def test_an_empty_hyper_file_is_named_by_its_path(tmp_path, capsys):
    hyper, model, save_path = _files(tmp_path)
    hyper.write_text("")
    err = _refused(capsys, hyper, model, save_path)
    assert f"{hyper} has 1 problem" in err and "is empty" in err


def test_an_objective_that_is_not_text(tmp_path, capsys):
    hyper, model, save_path = _files(tmp_path)
    (tmp_path / "objective.py").write_bytes(b"\xff\xfe\x00garbage")
    err = _refused(capsys, hyper, model, save_path)
    assert "- optuna.objective:" in err and "is not a text file" in err


def test_a_csv_that_cannot_be_written_leaves_the_trials_in_the_study(tmp_path, monkeypatch, caplog):
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=3)
    del hyper["optuna"]["objective"]
    cfg = read_config(hyper, dict(MODEL), objective=Quadratic)
    study = open_study(cfg, 1)

    def disk_full(self: ResultsCsv, row: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ResultsCsv, "append", disk_full)
    assert Worker(cfg, objective_class=Quadratic).run() == 3
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 3
    assert "No space left on device" in caplog.text and "--export-csv rebuilds the file" in caplog.text
