"""Each private Optuna name the package uses (aimlutils.hyper_opt._optuna) against the installed
Optuna: an upgrade that moves or changes one fails here, naming it, before any study meets it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aimlutils.hyper_opt import _optuna

MOVED = "Optuna {version} moved or changed {what}: aimlutils/hyper_opt/_optuna.py must follow it"


def _fail(what: str) -> str:
    return MOVED.format(version=optuna.__version__, what=what)


def test_tell_without_a_copy_returns_the_told_state_and_values():
    study = optuna.create_study()
    trial = study.ask()
    try:
        state, values = _optuna.tell(study, trial, 0.5, None)
    except (ImportError, TypeError, ValueError) as err:
        pytest.fail(_fail(f"optuna.study._tell._tell_with_warning ({err})"))
    assert (state, values) == (TrialState.COMPLETE, [0.5]), _fail("_tell_with_warning's return value")
    with pytest.raises(ValueError, match="Cannot tell"):
        _optuna.tell(study, study.trials[0].number, None, TrialState.FAIL)


def test_a_trials_id_and_its_own_copy():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("k", 1)
    assert _optuna.trial_id(trial) == study.trials[0]._trial_id, _fail("Trial._trial_id")
    copy = _optuna.frozen_copy(trial)
    assert isinstance(copy, optuna.trial.FrozenTrial) and copy.user_attrs == {"k": 1}, _fail(
        "Trial._cached_frozen_trial"
    )
    assert _optuna.study_storage(study) is study._storage, _fail("Study._storage")


def test_the_heartbeat_thread_and_its_check():
    storage = optuna.storages.RDBStorage(f"sqlite:///{tempfile.mkdtemp()}/h.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert _optuna.is_heartbeat_enabled(storage), _fail("storages._heartbeat.is_heartbeat_enabled")
    assert isinstance(storage, _optuna.BaseHeartbeat), _fail("storages._heartbeat.BaseHeartbeat")
    with _optuna.get_heartbeat_thread(_optuna.trial_id(trial), storage):
        pass


def test_the_journal_lock_base():
    methods = {"acquire", "release"}
    assert methods <= set(_optuna.BaseJournalFileLock.__abstractmethods__), _fail("BaseJournalFileLock")


def test_the_rdb_tables_and_the_attribute_upsert():
    tables = _optuna.rdb_tables()
    assert {"trial_id", "number", "datetime_complete"} <= set(tables.trials.c.keys()), _fail("RDB TrialModel")
    assert {"trial_id", "heartbeat"} <= set(tables.heartbeats.c.keys()), _fail("RDB TrialHeartbeatModel")
    assert {"trial_id", "key", "value_json"} <= set(tables.user_attrs.c.keys()), _fail("RDB user attributes")
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(tempfile.mkdtemp()) / 'u.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    session = storage.scoped_session()
    try:
        _optuna.set_user_attr_without_commit(storage, session, _optuna.trial_id(trial), "k", {"v": 1})
        session.commit()
    except AttributeError as err:
        pytest.fail(_fail(f"RDBStorage._set_trial_attr_without_commit ({err})"))
    finally:
        session.close()
    assert study.trials[0].user_attrs == {"k": {"v": 1}}
