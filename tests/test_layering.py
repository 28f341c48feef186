"""The package's dependencies point one way (issue 24): no module imports,
at its top or inside a function, a module that imports it back, and nothing outside a module
calls its private functions."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "salrun"


def imports_of(path: Path) -> set[str]:
    """The salrun modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("salrun"):
            found.add(node.module)
            if node.module == "salrun":  # from salrun import jobs, stats
                found.update(f"salrun.{alias.name}" for alias in node.names
                             if (PACKAGE / f"{alias.name}.py").is_file())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("salrun."))
    return found


def test_no_import_cycle():
    graph = {f"salrun.{p.stem}": imports_of(p) - {f"salrun.{p.stem}", "salrun"} for p in PACKAGE.glob("*.py")
             if p.stem != "__init__"}
    assert len(graph) > 20
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            assert state.get(target) != "open", " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_no_private_function_of_a_module_is_called_from_outside_it():
    """Such as the job layer's network builder: the run API is public (salrun.training, salrun.engines)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    private = re.compile(r"\b(" + "|".join(sorted(modules)) + r")\._[a-z]\w*")
    offenders = []
    for path in [*PACKAGE.glob("*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"),
                 *ROOT.glob("docs/*.py"), *ROOT.glob("examples/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in private.finditer(line):
                if match.group(1) != path.stem and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not offenders, "\n".join(offenders)
