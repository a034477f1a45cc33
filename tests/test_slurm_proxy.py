"""The storage proxy on the real test cluster: its own CPU job in front of PostgreSQL, killed
mid-study, replaced by a reload; the study still ends at exactly n_trials."""

from __future__ import annotations

import subprocess

import pytest

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers import read_jobs
from aimlutils.hyper_opt.storage.proxy import ProxyAddress
from tests.conftest import service_url
from tests.test_security import refuses_strangers
from tests.test_slurm import (  # noqa: F401 - cancel_leftover_jobs is a fixture, used by pytestmark
    cancel_leftover_jobs,
    command,
    config,
    counts,
    done,
    job_ids,
    queued,
    study_of,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "cancel_leftover_jobs")]


def _proxy_jobs(cfg: RunConfig) -> list[str]:
    return [job.job_id for job in read_jobs(cfg.paths) if job.role == "proxy"]


def test_four_array_tasks_of_four_workers_run_through_the_proxy_and_outlive_its_death(study_files):
    url = service_url("postgresql")
    section = {"slurm": {"jobs": 4, "tasks_per_worker": 4, "batch": {"t": "10"}}}
    hyper, model = study_files(
        test={"sleep": 0.5, "steps": 4},
        storage=url,
        n_trials=48,
        proxy={"host": "127.0.0.1"},  # the test cluster's nodes share the loopback network
        sections=section,
    )
    dry = command(hyper, model, "--dry-run")
    assert dry.returncode == 0 and "-m aimlutils.hyper_opt.launchers.proxy_server" in dry.stdout, (
        dry.stdout + dry.stderr
    )
    proc = command(hyper, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = config(hyper, model)
    proxies = _proxy_jobs(cfg)
    assert len(proxies) == 1
    study = study_of(cfg)
    wait_for(lambda: done(study) >= 8, 240, "8 trials through the proxy")
    address = ProxyAddress.read(cfg.paths.proxy_address)
    assert address is not None
    refuses_strangers(address)  # the workers pass; a client without the study's token does not
    # A proxy that dies mid-study: every process of its job killed at once.
    subprocess.run(["scancel", "--signal=KILL", "--full", proxies[0]], check=True)
    wait_for(lambda: not queued(proxies), 120, "the proxy job to end")
    # The reload starts a new proxy (and no more workers than places left); the waiting
    # workers carry on with it.
    again = command(hyper, model, "--reload")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_proxy_jobs(cfg)) == 2
    wait_for(lambda: not queued(job_ids(cfg)), 600, "every job to end")
    final = counts(study_of(cfg))
    assert final.get("COMPLETE", 0) + final.get("PRUNED", 0) == 48 and "RUNNING" not in final, final
    status = command("status", hyper)
    assert status.returncode == 0 and "Storage proxy:" in status.stdout, status.stdout
