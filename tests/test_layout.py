"""The package's shape, checked: wings in the tree, no import cycle, short modules, one error
family, Optuna's private modules reached from one module only."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path

import aimlutils.hyper_opt
from aimlutils.hyper_opt.errors import HyperOptException

PACKAGE = Path(aimlutils.hyper_opt.__file__).parent
NAME = "aimlutils.hyper_opt"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = (NAME, *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules that module ``name`` imports, at its top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target not in (name, NAME):
                yield target
                break


def test_no_module_of_the_package_imports_itself_through_others():
    modules = _modules()
    graph = {name: set(_imported(name, path, modules)) for name, path in modules.items()}
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*stack, nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


#: The wings from the bottom, as docs/background/code-layout.md lists them: each imports only
#: wings before it (or its own row's); the foundations and the users' import paths go anywhere.
WINGS = [
    {"errors", "paths", "stop", "lifeline", "logs", "_text", "_optuna"},
    {"schedulers"},
    {"storage"},
    {"search_space"},
    {"config"},
    {"coordination"},
    {"objective"},
    {"report", "launchers"},
    {"worker"},
    {"commands", "api", "cli", "base_objective", "utils", ""},  # "": the package's __init__
]


def test_each_wing_imports_only_the_wings_below_it():
    rank = {wing: level for level, row in enumerate(WINGS) for wing in row}
    modules = _modules()
    upward = []
    for name, path in modules.items():
        wing = name.removeprefix(NAME).removeprefix(".").split(".")[0]
        for target in _imported(name, path, modules):
            other = target.removeprefix(NAME + ".").split(".")[0]
            if rank[other] > rank[wing]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports of a higher wing:\n" + "\n".join(upward)


def test_the_root_holds_few_modules_and_no_module_is_long():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= 12, root_modules
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines: {long}"


def test_every_exception_of_the_package_derives_from_one_base():
    strays = []
    for info in pkgutil.walk_packages(aimlutils.hyper_opt.__path__, NAME + "."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            defined_here = cls.__module__ == module.__name__
            if defined_here and issubclass(cls, BaseException) and not issubclass(cls, HyperOptException):
                strays.append(f"{cls.__module__}.{cls.__qualname__}")
    assert not strays, f"exceptions outside the family: {strays}"


def test_optunas_private_modules_are_imported_in_one_module_only():
    users = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            if any(n.startswith("optuna.") and any(p.startswith("_") for p in n.split(".")) for n in names):
                users.append(name)
                break
    assert users == [f"{NAME}._optuna"], users


def test_the_import_paths_users_write_still_work():
    from aimlutils.hyper_opt.base_objective import BaseObjective, TrialResultError  # noqa: F401
    from aimlutils.hyper_opt.utils import KerasPruningCallback, TorchCheckpoint, report_and_prune  # noqa: F401
    from aimlutils.hyper_opt.worker import main  # noqa: F401 - the aimlutils-worker entry point

    assert "aimlutils.hyper_opt.worker.__main__" not in sys.modules  # importing it runs a worker
