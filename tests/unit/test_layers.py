"""The package's import graph, read from the source: no module imports
itself back through others, and the lower rooms do not reach up.

Imports inside functions count: a late import is still an arrow, only a
hidden one.

The floors the architecture document shows are computed here too, so the
picture cannot drift from the code: ``python tests/unit/test_layers.py``
prints them (the file to update when a module moves).
"""

import ast
import os

import pytest

PACKAGE = 'nova_live_snapshot'
# The source tree beside these tests, whatever copy of the package is
# installed.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ROOT = os.path.join(REPO, PACKAGE)


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


FLOORS_DOC = os.path.join(REPO, 'doc', 'source', 'architecture',
                          'floors.txt')


def floors():
    """``{floor: [module, ...]}`` for every module but the packages'
    ``__init__``: a module with no project import stands on floor 1, any
    other one floor above the highest module it imports."""
    level = {}

    def floor(module):
        if module not in level:
            level[module] = 1 + max((floor(d) for d in GRAPH[module]),
                                    default=0)
        return level[module]

    found = {}
    for module, path in sorted(MODULES.items()):
        if os.path.basename(path) != '__init__.py':
            found.setdefault(floor(module), []).append(module)
    return found


def render_floors(width=76):
    """The floors as text, the top floor first, names without the package's
    prefix, wrapped at ``width``."""
    lines = []
    for number, modules in sorted(floors().items(), reverse=True):
        label = 'floor %-2d' % number
        line = label
        for name in (m[len(PACKAGE) + 1:] for m in modules):
            if len(line) + 1 + len(name) > width:
                lines.append(line)
                line = ' ' * len(label)
            line += ' ' + name
        lines.append(line)
    return '\n'.join(lines) + '\n'


def test_the_documented_floors_are_the_codes():
    """doc/source/architecture/floors.txt is what the imports say today."""
    with open(FLOORS_DOC) as f:
        documented = f.read()
    assert documented == render_floors(), (
        'the import graph changed: write the output of '
        '"python tests/unit/test_layers.py" to %s' % FLOORS_DOC)


if __name__ == '__main__':
    print(render_floors(), end='')
