"""The benchmarks still run: smoke runs of ``python -m benchmarks.scale`` (every storage),
``benchmarks.overhead``, ``benchmarks.search_quality``, ``benchmarks.pruning`` and, on the test
cluster, ``benchmarks.wall_time``, their sections well formed.

Not a timed test: the figures of a smoke run on a busy machine say nothing; only their shape and
the study's end (every trial finished, no worker crashed) are checked.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, service_url

#: The storages of the scale benchmark and the service each needs.
SERVICES = {
    "journal": None,
    "postgresql": "postgresql",
    "proxy": "postgresql",
    "mysql": "mysql",
    "redis": "redis",
}


def _available(service: str | None) -> bool:
    if service is None:
        return True
    try:
        service_url(service)  # fails under CI when the service is missing
    except pytest.skip.Exception:
        return False
    return True


def _empty_redis_db() -> str:
    """A Redis database of this test's own: the benchmark empties the one it is given."""
    import redis

    for db in range(12, 16):
        url = f"redis://127.0.0.1:6379/{db}"
        if not redis.Redis.from_url(url).dbsize():
            return url
    pytest.skip("no empty Redis database among 12 to 15")


def _bench_env() -> dict[str, str]:
    """This tree's package and benchmarks first, whatever the folder a benchmark runs in."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _benchmark(name: str) -> list[str]:
    """The command of benchmark ``name``, as a user runs it (``python -m benchmarks.<name>``)."""
    return [sys.executable, "-m", f"benchmarks.{name}"]


def _run_benchmark(name: str, args: list[str], tmp_path: Path, timeout_s: float) -> str:
    """Run benchmark ``name`` into a docs file that holds another section; its own section,
    once the other is checked to be kept."""
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\n<!-- begin other -->\n## Other\nkept\n<!-- end other -->\n")
    argv = [*_benchmark(name), "--output", str(output), *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env=_bench_env(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = output.read_text()
    assert "<!-- begin other -->\n## Other\nkept\n<!-- end other -->" in text
    return text.split(f"<!-- begin {name} -->", 1)[1].split(f"<!-- end {name} -->", 1)[0]


def test_scale_smoke_run_writes_a_well_formed_section_and_keeps_the_others(tmp_path):
    storages = [kind for kind, service in SERVICES.items() if _available(service)]
    figures = tmp_path / "scale.json"
    args = ["--smoke", "--storages", ",".join(storages), "--json", str(figures)]
    if "redis" in storages:
        args += ["--redis", _empty_redis_db()]
    section = _run_benchmark("scale", args, tmp_path, timeout_s=240)
    assert "## Scale" in section and "### Capacity model" in section
    measured = section.split("| storage |", 1)[1].split("\n\n", 1)[0]  # the first table
    rows = ["| storage |" + line if i == 0 else line for i, line in enumerate(measured.splitlines())]
    header, body = rows[0], [row for row in rows[1:] if "---" not in row]
    assert len(body) >= len(storages)
    assert all(row.count("|") == header.count("|") for row in body), body

    results = json.loads(figures.read_text())["results"]
    assert [r["case"]["storage"] for r in results] == storages
    for r in results:
        where = r["case"]["storage"]
        assert "error" not in r and "refused" not in r, (where, r.get("error") or r.get("refused"))
        assert r["crashed"] == 0 and r["stuck"] == 0, (where, r["crashes"])
        assert r["final_states"] == {"COMPLETE": r["n_trials"]}, where
        assert r["csv_rows"] == r["n_trials"], where
        assert 0 < r["utilisation"] <= 1, where
        assert r["ask_p50"] > 0 and r["tell_p50"] > 0, where
        assert r["file_ops_per_trial"] > 0, where
        if where in ("postgresql", "mysql"):  # one connection per worker, at most
            assert 0 < r["connections_max"] <= r["case"]["workers"], where
        if where == "proxy":  # the proxy's pool only
            assert 0 < r["connections_max"] <= 4, where


def test_a_scale_case_that_did_not_run_keeps_the_table_well_formed():
    from benchmarks.scale import report, run

    case = run.Case(storage="journal", workers=6, rate=15.0, trials_per_worker=2)
    width = report.TABLE_HEAD.splitlines()[0].count("|")
    base = {"case": dataclasses.asdict(case), "trial_s": case.trial_s}
    failed = {**base, "error": "RuntimeError: a | in the message\nand a second line"}
    refused = {**base, "refused": "too many connections", "fit": 3}
    for result in (failed, refused):
        row = report.table_row(result)
        assert row.count("|") == width and "\n" not in row, row


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` (its header and separator left out)."""
    block = text.split(heading, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    lines = ("|" + block).splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_overhead_smoke_run_measures_both_sides_and_keeps_the_worker_free_of_rich(tmp_path):
    args = ["--trials", "40", "--sqlite-trials", "30", "--from", "10", "--repeats", "1"]
    args += ["--startup-repeats", "1", "--import-repeats", "1", "--calls", "5,15"]
    section = _run_benchmark("overhead", args, tmp_path, timeout_s=120)
    per_trial = _table_after(section, "## Worker overhead")
    assert [row[0] for row in per_trial] == ["journal file", "sqlite"]
    for row in per_trial:  # plain ms, worker ms, their ratio
        plain, ours, ratio = float(row[2]), float(row[3]), float(row[4].strip("*"))
        assert plain > 0 and ours > 0 and abs(ratio - ours / plain) < 0.01 + 0.01 * ratio, row
        # Calls per trial: plain / worker, ratio. The worker runs Optuna's trial and more.
        counted, calls_ratio = row[6].split(", ")
        plain_calls, worker_calls = (float(n.replace(",", "")) for n in counted.split(" / "))
        assert 0 < plain_calls < worker_calls, row
        assert abs(float(calls_ratio) - worker_calls / plain_calls) < 0.01, row
    (startup,) = _table_after(section, "### Start-up")
    plain_s, optimize_s, difference = float(startup[0]), float(startup[1]), float(startup[2].strip("* s"))
    assert plain_s > 0 and optimize_s > 0 and abs(difference - (optimize_s - plain_s)) < 0.02
    imports = {row[0]: row for row in _table_after(section, "What each command imports")}
    worker = imports["worker (python -m aimlutils.hyper_opt.worker)"]
    # What a worker must never load: the terminal's and the report's libraries.
    assert {"rich", "pandas", "matplotlib"} <= set(worker[3].split(", ")), worker
    assert "pydantic" not in imports["plain Optuna script"][2], imports


def _section(text: str, name: str) -> str:
    return text.split(f"<!-- begin {name} -->", 1)[1].split(f"<!-- end {name} -->", 1)[0]


def test_search_quality_smoke_run_writes_its_section_plots_and_monotone_curves(tmp_path):
    output, curves_path = tmp_path / "benchmarks.md", tmp_path / "curves.json"
    output.write_text("# Benchmarks\n\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    argv = [*_benchmark("search_quality"), "--seeds", "2", "--trials", "6"]
    argv += [
        "--functions",
        "hartmann6,mixed,digits",
        "--workers",
        "1,3",
        "--mlp-trials",
        "2",
        "--mlp-epochs",
        "1",
    ]
    argv += ["--samplers", "default (no sampler set)"]
    argv += ["--output", str(output), "--figures", str(tmp_path), "--json", str(curves_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_bench_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    text = output.read_text()
    assert "<!-- begin other -->\nkept\n<!-- end other -->" in text
    section = _section(text, "search-quality")
    assert "### Hartmann6" in section and "### Digits MLP" in section and "(a) final regret / seq." in section
    curves = json.loads(curves_path.read_text())["curves"]
    for function, trials in (("hartmann6", 6), ("mixed", 6), ("digits", 2)):
        assert (tmp_path / f"search_quality_{function}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"](search_quality_{function}.png)" in section
        for workers in ("1", "3"):
            runs = curves[function]["default (no sampler set)"][workers]
            assert len(runs) == 2
            for run in runs:
                assert len(run) == trials and all(math.isfinite(v) and v >= 0 for v in run)
                assert all(a >= b for a, b in itertools.pairwise(run)), run  # best so far never worsens


def test_pruning_smoke_run_writes_a_row_per_pruner_and_a_plot(tmp_path):
    output, figure = tmp_path / "benchmarks.md", tmp_path / "pruning.png"
    argv = [*_benchmark("pruning"), "--seeds", "1", "--trials", "4"]
    argv += ["--epochs", "2", "--workers", "2", "--output", str(output), "--figure", str(figure)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_bench_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    section = _section(output.read_text(), "pruning")
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| none (NopPruner)",
        "| MedianPruner",
        "| SuccessiveHalvingPruner",
        "| HyperbandPruner",
    ]
    assert rows[0].split(" | ")[1].startswith("0% ")  # no pruning saves nothing
    assert "Recommended" in section and "](pruning.png)" in section
    assert figure.read_bytes()[:4] == b"\x89PNG"


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _private_uses(path: Path) -> list[str]:
    """Private names of the package in one file: imported (from a private module too), called
    through ``super()``, or defined as methods of a subclass of a package class."""
    tree = ast.parse(path.read_text(), str(path))
    found, package_names = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aimlutils"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names if _private(name)]
            package_names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if a.name.startswith("aimlutils") and _private(a.name)
            ]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            call = node.value
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "super":
                found.append((node.lineno, f"super().{node.attr}"))
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        if any(isinstance(base, ast.Name) and base.id in package_names for base in cls.bases):
            methods = [f for f in cls.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
            found += [(f.lineno, f"{cls.name}.{f.name}") for f in methods if _private(f.name)]
    return [f"{path.relative_to(ROOT)}:{line} {name}" for line, name in found]


def test_no_benchmark_uses_a_private_name_of_the_package():
    """Benchmarks use the package's public names only, and override none of its private methods,
    so that a change inside the package that keeps its API keeps them running."""
    found = [use for path in sorted((ROOT / "benchmarks").rglob("*.py")) for use in _private_uses(path)]
    assert not found, "private names of the package used by benchmarks:\n" + "\n".join(found)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_wall_time_smoke_run_measures_both_settings_on_the_test_cluster(tmp_path):
    output, figures = tmp_path / "benchmarks.md", tmp_path / "wall_time.json"
    output.write_text("# Benchmarks\n\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    argv = [*_benchmark("wall_time"), "--smoke", "--output", str(output), "--json", str(figures)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=_bench_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    text = output.read_text()
    assert "<!-- begin other -->\nkept\n<!-- end other -->" in text
    section = _section(text, "wall-time")
    assert "`python -m benchmarks.wall_time --smoke`" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| default", "false"],
        ["| default", "true"],
        ["| none", "false"],
        ["| none", "true"],
    ]
    results = json.loads(figures.read_text())
    for setting in ("default/false", "default/true", "none/false", "none/true"):
        measured = results[setting]
        assert measured["complete"] == 2 and measured["trial_s"] > 0, measured
        assert measured["lost_after_s"] >= 0 and measured["lost_none_s"] >= 0, measured
