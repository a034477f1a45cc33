"""Tuning any command: argv building, config checks, and a shell script tuned end to end."""

from __future__ import annotations

import csv
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.config.command import CommandSpec, check_command_section
from aimlutils.hyper_opt.coordination import read_record
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.worker import Worker
from tests.conftest import MODEL, hyper_config
from tests.test_local_run import load_study, optimize

# No Python: prints intermediate JSON lines (2*lr per step), keeps a child `sleep` running that
# would outlive the test (so a worker that waited for it would never finish), writes the pids of
# itself and its child, and fails on purpose for lr == 0.5.
SCRIPT = textwrap.dedent(
    """\
    #!/bin/sh
    for a in "$@"; do case "$a" in --lr=*) lr="${a#--lr=}";; esac; done
    sleep 86400 &
    echo "$$ $!" > pids.txt
    if [ "$lr" = "0.5" ]; then
        echo "some progress" >&2
        echo "the data is gone" >&2
        exit 3
    fi
    for step in 0 1 2; do
        echo "epoch $step"
        echo "{\\"step\\": $step, \\"val_loss\\": $(awk "BEGIN{print 2 * $lr}")}"
        sleep 0.2
    done
    echo "{\\"val_loss\\": $(awk "BEGIN{print $lr * $lr}"), \\"config\\": \\"$AIMLUTILS_MODEL_CONFIG\\"}"
    """
)


def test_placeholders_and_pass_as_build_the_argv() -> None:
    spec, problems = check_command_section(
        {
            "command": "train --lr={lr} --cfg {config} -n {trial} {parameters} '{{x}}'",
            "pass-as": {"lr": "-l {v}"},
        },
        ["lr", "units", "act"],
    )
    assert problems == [] and spec is not None
    argv = spec.argv({"lr": 0.5, "units": 8, "act": "leaky relu"}, config="/t/model.yml", trial=7)
    assert argv == [
        "train", "--lr=0.5", "--cfg", "/t/model.yml", "-n", "7",
        "-l", "0.5", "--units=8", "--act=leaky relu", "{x}",
    ]  # fmt: skip
    assert CommandSpec(("run", "{parameters}")).argv({"flag": True}, "c", 0) == ["run", "--flag=true"]


@pytest.mark.parametrize(
    ("objective", "expected"),
    [
        ({"pass-as": {}}, "optuna.objective.command: required key is missing"),
        ({"command": "run", "shell": True}, "objective.shell: unknown key; allowed here: command, pass-as"),
        ({"command": "run --x={lrr}"}, "optuna.objective.command: placeholder {lrr} is not a parameter"),
        ({"command": "run --p={parameters}"}, "{parameters} must be a word of its own"),
        ({"command": "run {parameters}", "pass-as": {"lr": "--lr"}}, "objective.pass-as.lr: got '--lr'"),
        ({"command": "run {parameters}", "pass-as": {"mom": "--m={v}"}}, "pass-as.mom: not a parameter name"),
        ({"command": "run 'unclosed"}, "cannot split it"),
    ],
)
def test_command_config_errors_name_the_key(tmp_path: Path, objective: dict, expected: str) -> None:
    data = hyper_config(tmp_path / "results", tmp_path / "unused.py")
    data["optuna"]["objective"] = objective
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(data))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(MODEL))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "hyper.yml", tmp_path / "model.yml", base_dir=tmp_path)
    assert expected in str(err.value)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_shell_script_is_tuned_with_pruning_and_failures(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    lrs = [0.1, 0.9, 0.5, 0.2, 0.8]
    data = hyper_config(
        tmp_path / "results",
        script,
        n_trials=len(lrs),
        enqueue=[{"lr": lr} for lr in lrs],
        # 2*lr above 1 at the first step: lr 0.9 and 0.8 are pruned at once, with the child alive.
        pruner={"type": "ThresholdPruner", "upper": 1.0},
        max_retries=0,
    )
    data["optuna"]["objective"] = {"command": f"{script} {{parameters}}"}
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    # Finishing at all shows that no trial waited for its command's day-long child.
    proc = optimize(hyper, model, "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A failed trial does not use up n_trials, so one more (random) trial runs after the five.
    trials = {t.params["lr"]: t for t in load_study(hyper, model).get_trials() if t.params["lr"] in lrs}
    assert {lr: t.state.name for lr, t in trials.items()} == {
        0.1: "COMPLETE", 0.9: "PRUNED", 0.5: "FAIL", 0.2: "COMPLETE", 0.8: "PRUNED"
    }  # fmt: skip
    results = tmp_path / "results" / "trials"
    for lr, trial in trials.items():
        folder = results / str(trial.number)
        # Every process the trial started (the script and its child) is gone.
        pids = [int(p) for p in (folder / "pids.txt").read_text().split()]
        assert not any(_alive(pid) for pid in pids), (lr, pids)
        assert (folder / "stdout.txt").exists() and (folder / "stderr.txt").exists()
        conf = yaml.safe_load((folder / "model.yml").read_text())
        assert conf["optimizer"]["learning_rate"] == lr
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(lr * lr)
            assert read_record(trial)["results"]["config"] == str(folder / "model.yml")
            assert sorted(trial.intermediate_values) == [0, 1, 2]
            assert "epoch 2" in (folder / "stdout.txt").read_text()
        if trial.state.name == "PRUNED":
            assert sorted(trial.intermediate_values) == [0]
    reason = read_record(trials[0.5])["fail_reason"]
    assert "exited with code 3" in reason and reason.endswith("some progress\nthe data is gone")
    with open(tmp_path / "results" / "trial_results.csv", newline="") as fh:
        rows = {float(r["lr"]): r for r in csv.DictReader(fh)}
    assert "the data is gone" in rows[0.5]["fail_reason"]


# Writes the trial's variables as it sees them, one a line ("unset" for a missing one).
SHOW_ENV = textwrap.dedent(
    """\
    #!/bin/sh
    for v in AIMLUTILS_MODEL_CONFIG AIMLUTILS_TRIAL_NUMBER AIMLUTILS_TRIAL_DIR; do
        printenv "$v" || echo unset
    done > env.txt
    echo '{"val_loss": 0.5}'
    """
)


def test_the_trial_variables_are_set_for_the_command_only(tmp_path: Path, monkeypatch) -> None:
    """Each trial's command gets its own AIMLUTILS_* values; the worker's environment, which
    its later trials and anything else it starts inherit, stays as it was. The worker runs in
    this process, so its environment is ``os.environ`` here."""
    for name in ("AIMLUTILS_MODEL_CONFIG", "AIMLUTILS_TRIAL_NUMBER", "AIMLUTILS_TRIAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    script = tmp_path / "show_env.sh"
    script.write_text(SHOW_ENV)
    script.chmod(0o755)
    data = hyper_config(tmp_path / "results", script, n_trials=3)
    data["optuna"]["objective"] = {"command": str(script)}
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    cfg = load_config(hyper, model, base_dir=tmp_path)
    cfg.save_path.mkdir(parents=True)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    before = dict(os.environ)
    assert Worker(cfg).run() == 3
    assert dict(os.environ) == before
    for number in range(3):
        folder = cfg.save_path / "trials" / str(number)
        seen = (folder / "env.txt").read_text().splitlines()
        assert seen == [str(folder / "model.yml"), str(number), str(folder)]


def test_a_script_named_relative_to_where_optimize_runs_is_found_from_each_trials_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.py").write_text('import json\nprint(json.dumps({"val_loss": 0.25}))\n')
    data = hyper_config(tmp_path / "results", tmp_path / "train.py", n_trials=2)
    data["optuna"]["objective"] = {"command": f"{sys.executable} train.py {{parameters}}"}
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    proc = optimize(hyper, model, "--workers", "1")  # from hyper.yml's folder, as a user runs it
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [t.state.name for t in load_study(hyper, model).get_trials()] == ["COMPLETE", "COMPLETE"]
    copy = yaml.safe_load((tmp_path / "results" / "configs" / "hyper.yml").read_text())
    assert str(tmp_path / "train.py") in copy["optuna"]["objective"]["command"]
