"""The repository's own rules, checked: the HE tools and the benchmarks use only the
public names of pnn_ext.train, the README links only inside the repository, no data
default points outside it, and no source file grows past 400 lines without saying why."""
import ast
import os
import re

import pytest

from testing import ROOT

SOURCE_DIRS = ("pnn_ext", "tests", "bench", "scripts", "experiments", "csrc")
SOURCE_EXT = (".py", ".sh", ".h", ".cuh", ".cpp", ".cu")
MAX_LINES = 400


def _files(*dirs, ext=SOURCE_EXT):
    for d in dirs:
        for base, _, names in os.walk(os.path.join(ROOT, d)):
            if "__pycache__" in base:
                continue
            yield from (os.path.join(base, n) for n in sorted(names) if n.endswith(ext))


def _train_imports(path):
    """(module, name) of every import from pnn_ext.train (absolute or relative) in a file."""
    tree = ast.parse(open(path).read(), path)
    pkg = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                module = ".".join(parts + ([module] if module else []))
            if module == "pnn_ext.train" or module.startswith("pnn_ext.train."):
                for alias in node.names:
                    yield module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pnn_ext.train"):
                    yield alias.name, ""


@pytest.mark.parametrize("path", [p for p in _files("pnn_ext/he", "bench", ext=(".py",))],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_he_and_bench_use_only_public_train_names(path):
    import pnn_ext.train
    for module, name in _train_imports(path):
        assert module == "pnn_ext.train" and name in pnn_ext.train.__all__, \
            f"{os.path.relpath(path, ROOT)} imports {name or module} from {module}: use pnn_ext.train's public names"


def test_readme_links_stay_inside_the_repository():
    """README.md and docs/: no link to a web address or a path outside the clone, none to a missing file."""
    docs = sorted(n for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))  # not docs/img
    for doc in ["README.md", *(os.path.join("docs", n) for n in docs)]:
        text = open(os.path.join(ROOT, doc)).read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            assert not re.match(r"[a-z]+://", target), f"{doc} links outside the repository: {target}"
            resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), target.split("#")[0]))
            assert resolved.startswith(ROOT + os.sep), f"{doc} links outside the repository: {target}"
            assert os.path.exists(resolved), f"{doc} links to a missing file: {target}"


def test_no_default_points_outside_the_repository():
    outside = os.path.join("..", "shared")  # the workspace beside the clone (spelt so, this file does not match)
    for path in _files("pnn_ext", "scripts", "experiments", "bench", "tests"):
        assert outside not in open(path).read(), os.path.relpath(path, ROOT)


def test_long_source_files_say_why():
    """A source file over 400 lines says why in its first 15 lines (a comment naming "400 lines")."""
    unexplained = []
    for path in _files(*SOURCE_DIRS):
        lines = open(path, errors="replace").read().splitlines()
        if len(lines) > MAX_LINES and not any("400 lines" in line for line in lines[:15]):
            unexplained.append(f"{os.path.relpath(path, ROOT)} ({len(lines)} lines)")
    assert not unexplained, f"over {MAX_LINES} lines, no comment at the top saying why: {unexplained}"


# The package's layers, lowest first: a module imports from its own layer or below, never
# from above (the package roots' __init__ re-exports are not imports of their own layer).
LAYERS = (("pnn_ext.errors", "pnn_ext.strict_json", "pnn_ext.atomic_file", "pnn_ext.reference", "pnn_ext.ops",
           "pnn_ext.activations", "pnn_ext.fitting", "pnn_ext.nn", "pnn_ext.clip", "pnn_ext.models"),
          ("pnn_ext.conversion",), ("pnn_ext.train",), ("pnn_ext.he",), ("pnn_ext.export",))


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path, modules):
    """The pnn_ext modules ``path`` imports, at any depth (lazy imports in functions too)."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _import_graph():
    paths = {_module_name(p): p for p in _files("pnn_ext", ext=(".py",))}
    return {m: {i for i in _imports(p, paths) if i in paths and i != m} for m, p in paths.items()}


def _layer(module):
    for i, layer in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer):
            return i
    return None


def test_no_import_cycle_in_the_package():
    """A depth-first walk of the import graph finds no way back to a module still open."""
    graph = _import_graph()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m] - {"pnn_ext"}):  # the root imports everything, as its API
            # a module importing its own package (pnn_ext.train.loop: pnn_ext.train) is no cycle
            if state.get(n) == "open" and not (m.startswith(n + ".") or n.startswith(m + ".")):
                cycles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_no_upward_import_in_the_package():
    upward = []
    for m, imported in _import_graph().items():
        if m in {layer for layers in LAYERS for layer in layers} or m == "pnn_ext":
            continue  # a package root's __init__ re-exports its own modules
        for n in imported:
            if _layer(m) is not None and _layer(n) is not None and _layer(n) > _layer(m):
                upward.append(f"{m} imports {n}")
    assert all(_layer(m) is not None for m in _import_graph() if m != "pnn_ext"), "a module outside LAYERS"
    assert not upward, f"upward imports: {upward}"


API_PAGES = {"pnn_ext": "docs/api/pnn_ext.md", "pnn_ext.train": "docs/api/train.md", "pnn_ext.he": "docs/api/he.md",
             "pnn_ext.export": "docs/api/export.md"}


@pytest.mark.parametrize("package", sorted(API_PAGES))
def test_every_public_name_is_in_the_api_reference_with_a_docstring(package):
    """The API reference (mkdocstrings) lists each name of ``__all__``, as a member of the
    package's ``:::`` block or a block of its own, and each callable or module has a docstring."""
    import importlib
    import inspect

    module = importlib.import_module(package)
    page = open(os.path.join(ROOT, API_PAGES[package])).read()
    members = set(re.findall(r"^\s+- (\w+)$", page, re.M))
    blocks = set(re.findall(r"^::: ([\w.]+)$", page, re.M))
    for name in module.__all__:
        assert name in members or f"{package}.{name}" in blocks, f"{package}.{name} is not in {API_PAGES[package]}"
        obj = getattr(module, name)
        if callable(obj) or inspect.ismodule(obj):
            assert (obj.__doc__ or "").strip(), f"{package}.{name} has no docstring"
    assert not members - set(module.__all__), f"{API_PAGES[package]} lists names not in {package}.__all__"


def test_version_is_the_package_metadata_and_the_changelog_has_it():
    import pnn_ext

    version = re.search(r'^version = "([^"]+)"', open(os.path.join(ROOT, "pyproject.toml")).read(), re.M).group(1)
    assert pnn_ext.__version__ == version
    assert f"## [{version}]" in open(os.path.join(ROOT, "CHANGELOG.md")).read()


def test_readme_is_a_landing_page():
    """At most 200 lines: what it is, the two commands, snippets, results at a glance with
    links, limits; everything else lives in docs/."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) <= 200
    assert "bash scripts/main.sh" in readme and "bash scripts/test.sh" in readme
