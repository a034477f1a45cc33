"""The storage wing's contract: a storage kind is one class, found by its URL scheme.

A made-up kind defined here plugs in with one class and runs a study through the worker path; the
built-in kinds answer for their own schemes, drivers, outages and connections.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import ConfigError
from aimlutils.hyper_opt.storage import Opened, StorageKind, kinds, open_for_command, parse_storage, register
from aimlutils.hyper_opt.storage.resilient import is_outage
from aimlutils.hyper_opt.worker import Worker
from tests.conftest import MODEL, hyper_config, needs_module


@register
class FolderJournal(StorageKind):
    """``folderjournal://DIR``: a journal file named study.log in DIR, DIR made when missing."""

    name = "folderjournal"
    title = "a folder's journal"
    schemes = ("folderjournal",)
    opened: list[str] = []  # noqa: RUF012 - what the test reads back

    def location(self, scheme: str, rest: str, base_dir: Path) -> str:
        path = Path(rest)
        return str(path if path.is_absolute() else base_dir / path)

    def open(self, location: str, connections: int, name: str) -> Opened:
        FolderJournal.opened.append(location)
        Path(location).mkdir(parents=True, exist_ok=True)
        return Opened(JournalStorage(JournalFileBackend(str(Path(location) / "study.log"))))

    def is_outage(self, err: BaseException) -> bool:
        return isinstance(err, _FolderGone)


class _FolderGone(Exception):
    pass


class _Quick(BaseObjective):
    def train(self, trial: optuna.trial.BaseTrial, conf: dict) -> dict:  # type: ignore[type-arg]
        return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}


def test_a_made_up_storage_kind_runs_a_study_through_the_worker_path(tmp_path):
    folder = tmp_path / "store"
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=5)
    del hyper["optuna"]["objective"]
    hyper["optuna"]["storage"] = f"folderjournal://{folder}"
    cfg = read_config(hyper, dict(MODEL), objective=_Quick)
    assert cfg.storage.kind == "folderjournal" and cfg.storage.location == str(folder)
    open_study(cfg, 1)
    assert Worker(cfg, objective_class=_Quick).run() == 5
    assert str(folder) in FolderJournal.opened
    study = optuna.load_study(
        study_name=cfg.study_name, storage=JournalStorage(JournalFileBackend(str(folder / "study.log")))
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    # The record is a write of its own here (the kind says nothing of riding), and it is there.
    assert all(t.user_attrs["record"]["results"]["val_loss"] == t.value for t in study.trials)
    assert cfg.csv_path.read_text().count("COMPLETE") == 5


def test_a_made_up_kinds_outage_is_waited_out_as_any_storages():
    assert is_outage(_FolderGone("the folder's server restarts"))
    assert not is_outage(ValueError("a wrong request"))


def test_a_made_up_kind_cannot_take_a_scheme_another_kind_has():
    class Impostor(StorageKind):
        name = "impostor"
        schemes = ("postgres",)

        def open(self, location: str, connections: int, name: str) -> Opened:
            raise NotImplementedError

    with pytest.raises(ValueError, match="belong to 'postgresql'"):
        register(Impostor)


def test_an_unknown_scheme_lists_every_kind_registered(tmp_path):
    with pytest.raises(ValueError) as err:
        parse_storage("mongodb://host/db", None, tmp_path, tmp_path)
    for scheme in ("sqlite://", "postgresql://", "mysql://", "redis://", "folderjournal://"):
        assert scheme in str(err.value)


def test_the_proxy_is_refused_in_front_of_a_kind_it_cannot_front(tmp_path):
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py")
    del hyper["optuna"]["objective"]
    hyper["optuna"].update(storage=f"folderjournal://{tmp_path / 'store'}", proxy=True)
    with pytest.raises(
        ConfigError, match=r"the storage proxy fronts PostgreSQL or MySQL, but optuna\.storage is"
    ):
        read_config(hyper, dict(MODEL), objective=_Quick)


@pytest.mark.parametrize(
    ("url", "kind", "location"),
    [
        ("postgres://u@h/db", "postgresql", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql", "postgresql+psycopg2://u@h/db"),
        ("mariadb://root@h/db", "mysql", "mysql+pymysql://root@h/db"),
        ("rediss://h:6380/0", "redis", "rediss://h:6380/0"),
    ],
)
def test_each_kind_answers_for_its_schemes(tmp_path, url, kind, location):
    spec = parse_storage(url, None, tmp_path, tmp_path)
    assert (spec.kind, spec.location) == (kind, location)


def test_only_database_servers_hold_connections_and_only_they_take_the_proxy():
    holding = {k.name for k in kinds() if k.holds_connections}
    fronted = {k.name for k in kinds() if k.proxy_can_front}
    assert holding == fronted == {"postgresql", "mysql"}
    assert {k.name for k in kinds()} >= {"journal", "sqlite", "postgresql", "mysql", "redis"}


@pytest.mark.parametrize(
    "url",
    ["redis://:hunter2secret@127.0.0.1:1/0", "postgresql://postgres@127.0.0.1:1/test?password=hunter2secret"],
)
def test_an_unreachable_storage_is_named_with_its_password_masked(tmp_path, url):
    needs_module("redis" if url.startswith("redis") else "psycopg")
    spec = parse_storage(url, None, tmp_path, tmp_path)
    with pytest.raises(ConfigError) as err:
        open_for_command(spec, wait_s=1, open_wait_s=1)  # port 1: nothing listens
    text = str(err.value)
    assert "optuna.storage" in text and "does not answer" in text, text
    assert "hunter2secret" not in text and "***" in text, text


def test_a_refused_storage_url_is_shown_with_its_password_masked(tmp_path):
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py")
    del hyper["optuna"]["objective"]
    hyper["optuna"]["storage"] = "mongodb://admin:hunter2secret@db.example/study"
    with pytest.raises(ConfigError) as err:
        read_config(hyper, dict(MODEL), objective=_Quick)
    assert "hunter2secret" not in str(err.value) and "mongodb://admin:***@" in str(err.value)
