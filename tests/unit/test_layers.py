"""The package's import graph, read from the source: no module imports
itself back through others, and the lower rooms do not reach up.

Imports inside functions count: a late import is still an arrow, only a
hidden one.
"""

import ast
import os

import pytest

import nova_live_snapshot

PACKAGE = 'nova_live_snapshot'
ROOT = os.path.dirname(nova_live_snapshot.__file__)


def _modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3]
            dotted = rel.replace(os.sep, '.')
            if dotted.endswith('.__init__'):
                dotted = dotted[:-len('.__init__')]
            found[dotted] = path
    return found


MODULES = _modules()


def imports_of(module):
    """The project modules ``module`` imports, anywhere in its body."""
    with open(MODULES[module]) as f:
        tree = ast.parse(f.read())
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module + '.' + a.name for a in node.names]
            names = [n if n in MODULES else node.module for n in names]
        else:
            continue
        deps.update(n for n in names
                    if n.split('.')[0] == PACKAGE and n in MODULES)
    deps.discard(module)
    return deps


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles():
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def _reach(module):
    seen, todo = set(), [module]
    while todo:
        for dep in GRAPH[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_import_graph_has_no_loops():
    assert _cycles() == []


def test_guest_and_host_do_not_import_each_other():
    """host hands out Guests; both translate errors and wait through
    modules of their own."""
    guest = PACKAGE + '.guest'
    assert PACKAGE + '.host' not in _reach(guest)
    assert GRAPH[PACKAGE + '.waiting'] == set()
    assert GRAPH[PACKAGE + '.virterror'] == {PACKAGE + '.exception'}


@pytest.mark.parametrize('module', sorted(
    m for m in MODULES if m.startswith(PACKAGE + '.osc')))
def test_the_client_reaches_only_the_shared_names(module):
    """The openstack plugin imports its own modules and the record's names,
    nothing of the compute side (which needs nova and libvirt)."""
    allowed = {m for m in MODULES if m.startswith(PACKAGE + '.osc')}
    allowed |= {PACKAGE, PACKAGE + '.protocol'}
    assert _reach(module) - allowed == set()


def test_the_shared_names_import_nothing():
    """protocol.py is the client's and the services' common ground: it
    must import nothing but the standard library."""
    with open(MODULES[PACKAGE + '.protocol']) as f:
        tree = ast.parse(f.read())
    imported = {a.name.split('.')[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {'types'}
