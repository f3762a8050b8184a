"""The package's layering and size, read from its source: a model knows no dataset and no config, losses take tensors,
data knows no model; no function passes 80 lines and no file 400."""
import ast
import os

import pytest
from helpers import ROOT

PACKAGE = os.path.join(ROOT, "dml_csr")
# importer (a subpackage or module of dml_csr) -> what it must never import, lazily inside a function included.
# The rooms, bottom up: the foundation at the root; data/, models/, losses/; evaluation/; training/ and photos/
# (the web demo's command, dml_csr.app, stands at the root and imports its code from photos/); benchmarks/, which
# measures the code of training/ and photos/ and which nothing in the package imports.
BENCHMARKS = "dml_csr.benchmarks"
ROOMS_ABOVE = ("dml_csr.evaluation", "dml_csr.training", "dml_csr.photos", BENCHMARKS)
FOUNDATION = ("dml_csr._typed", "dml_csr.config", "dml_csr.conventions", "dml_csr.distributed", "dml_csr.files",
              "dml_csr.checkpoint", "dml_csr.hub", "dml_csr.inference", "dml_csr.face_parts")
FORBIDDEN = {
    "dml_csr.models": ("dml_csr.data", "dml_csr.config", "dml_csr.checkpoint") + ROOMS_ABOVE,
    "dml_csr.losses": ("dml_csr.data", "dml_csr.config", "dml_csr.checkpoint", "dml_csr.models") + ROOMS_ABOVE,
    "dml_csr.data": ("dml_csr.models", "dml_csr.losses") + ROOMS_ABOVE,
    "dml_csr.evaluation": ("dml_csr.training", "dml_csr.photos", BENCHMARKS),
    "dml_csr.training": ("dml_csr.photos", BENCHMARKS),
    "dml_csr.photos": (BENCHMARKS,),
    "dml_csr.conventions": ("dml_csr.",),
    "dml_csr.files": ("dml_csr.",),
    **{name: ROOMS_ABOVE for name in FOUNDATION},
    # files and names of shared models: below the checkpoint schema and the registry, which call it
    "dml_csr.sharing": ("dml_csr.checkpoint", "dml_csr.hub", "dml_csr.models", "dml_csr.data") + ROOMS_ABOVE,
    "dml_csr": ("scripts",),
}


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


def _imports(name: str, path: str) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative imports resolved."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import x` imports a module x
    return found


def test_the_layers_import_only_downwards():
    broken = []
    for name, path in _modules():
        for layer, banned in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                for imported in _imports(name, path):
                    if any(imported == b.rstrip(".") or imported.startswith(b if b.endswith(".") else b + ".")
                           for b in banned):
                        broken.append(f"{name} imports {imported}")
    assert not broken, "\n".join(sorted(broken))


def test_nothing_in_the_package_imports_the_benchmarks():
    """The top room: the scripts call it; no module outside it (the web demo's command included) imports it."""
    inside = BENCHMARKS + "."
    broken = [f"{name} imports {imported}" for name, path in _modules()
              if name != BENCHMARKS and not name.startswith(inside)
              for imported in _imports(name, path) if imported == BENCHMARKS or imported.startswith(inside)]
    assert not broken, "\n".join(sorted(broken))
    assert any(name.startswith(inside) for name, _ in _modules())  # the room is there: the check sees its modules


def test_the_package_root_holds_the_foundation_only():
    """At most 12 modules beside the subpackages (the rooms): a newcomer sees which modules belong together."""
    modules = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py"))
    assert len(modules) <= 12, f"dml_csr/ holds {len(modules)} modules: {', '.join(modules)}"


def test_the_import_reader_sees_relative_and_lazy_imports(tmp_path):
    """The check above would pass vacuously if it could not see an import: show it one of each kind."""
    pkg = tmp_path / "dml_csr" / "models"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from ..data.labels import get_spec\nfrom . import norm\n\ndef g():\n    import dml_csr.config\n")
    assert {"dml_csr.data.labels", "dml_csr.models.norm", "dml_csr.config"} <= _imports("dml_csr.models.x", str(f))


@pytest.mark.parametrize("name,path", sorted(_modules()))
def test_files_and_functions_stay_small(name, path):
    source = open(path).read()
    assert len(source.splitlines()) <= 400, f"{path} has {len(source.splitlines())} lines (at most 400)"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, f"{path}: {', '.join(long)} (at most 80 lines a function)"


def test_the_parser_is_a_facade():
    """FaceParser stands in front of the model, the pipeline, the detector and the colours (about 120 lines)."""
    path = os.path.join(PACKAGE, "photos", "parser.py")
    (cls,) = [n for n in ast.parse(open(path).read()).body if isinstance(n, ast.ClassDef) and n.name == "FaceParser"]
    assert cls.end_lineno - cls.lineno + 1 <= 150


def test_the_lazy_exports_are_listed():
    import dml_csr

    assert {"FaceParser", "load_model"} <= set(dir(dml_csr))


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")))
def test_scripts_parse_arguments_and_call_the_package(script):
    """A script is its command line: at most about 150 lines, the work is in the package."""
    lines = len(open(os.path.join(ROOT, "scripts", script)).read().splitlines())
    assert lines <= 150, f"scripts/{script} has {lines} lines (at most about 150)"
