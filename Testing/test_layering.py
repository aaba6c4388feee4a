"""The layering contract: packages import only downward (pyproject's [tool.importlinter]) and no module import cycle
exists anywhere in MedSRLib or Training, including imports written inside functions."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("MedSRLib", "Training")


def import_cycles(graph: grimp.ImportGraph):
    """Every strongly connected group of two or more modules (Tarjan's algorithm), each as a sorted list."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True)


def cycles_in(root: Path):
    """The import cycles of the packages under ``root``, found in a fresh interpreter (this one has them imported)."""
    script = ("import json, sys, grimp; sys.path.insert(0, sys.argv[1]); from test_layering import import_cycles; "
              "print(json.dumps(import_cycles(grimp.build_graph('MedSRLib', 'Training', cache_dir=None))))")
    result = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], cwd=root,
                            env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_layers_contract_is_kept():
    result = lint_imports(REPOSITORY)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_import_cycle():
    assert cycles_in(REPOSITORY) == []


def test_cycle_finder_reports_a_cycle_and_only_the_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.low", "a.high", "a.other"):
        graph.add_module(module)
    graph.add_import(importer="a.high", imported="a.low")
    graph.add_import(importer="a.low", imported="a.high")
    graph.add_import(importer="a.other", imported="a.low")
    assert import_cycles(graph) == [["a.high", "a.low"]]


@pytest.fixture
def copied_tree(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPOSITORY / package, tmp_path / package, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copy(REPOSITORY / "pyproject.toml", tmp_path)
    return tmp_path


def test_an_upward_import_breaks_the_contract(copied_tree):
    """A primitive that imports a front end (here inside a function, as cycles used to be hidden) is refused."""
    geometry = copied_tree / "MedSRLib" / "grid" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\n\ndef _upward():\n    from MedSRLib.apps import cli  # noqa: F401\n")
    result = lint_imports(copied_tree)
    assert result.returncode != 0
    assert "MedSRLib.grid.geometry -> MedSRLib.apps.cli" in result.stdout
    assert any("MedSRLib.grid.geometry" in cycle for cycle in cycles_in(copied_tree))


def test_the_library_and_the_command_line_start_without_torch():
    # torch costs seconds to import: only running a learned method (or training) may pay for it, not `medsr methods`,
    # an interpolation, the Slicer panel's worker start or the server's request checks.
    code = ("import sys, MedSRLib.api, MedSRLib.apps.cli, MedSRLib.methods; "
            "print(sorted(name for name in ('torch', 'openvino') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
