"""The start-up self-check against the installed Nova (selfcheck.py).

Each extension point is broken in turn on the real installed Nova (a name
removed, a parameter dropped, the module made unimportable, another
version) and the check must refuse naming it; the package's own source is
walked for every ``nova.*`` name it uses, which the check must cover.
"""

import ast
import enum
import importlib.metadata
import pathlib
import sys
import types

import pytest

from nova_live_snapshot.api import filter as api_filter
from nova_live_snapshot import exception
from nova_live_snapshot import selfcheck

PACKAGE = pathlib.Path(selfcheck.__file__).parent
# The long-task executor's names of the installed Nova (34's; 33's are
# simulated where a test needs them).
LONG_TASK = next(n for n in selfcheck.LONG_TASK_NEEDS
                 if not selfcheck.missing(n))
ALL_NEEDS = selfcheck.DRIVER_NEEDS + selfcheck.API_NEEDS + LONG_TASK
# Every name the check knows, for the walk over the package's source.
KNOWN_NEEDS = ALL_NEEDS + sum(selfcheck.LONG_TASK_NEEDS, ())


def _break(need, monkeypatch):
    """Make ``need`` unresolvable on the installed Nova for this test."""
    parts = need.attribute.split('.')
    holders = [importlib.import_module(need.module)]
    for part in parts[:-1]:
        holders.append(getattr(holders[-1], part))
    parent, leaf = holders[-1], parts[-1]
    if isinstance(parent, types.ModuleType):
        monkeypatch.delattr(parent, leaf)
    elif isinstance(parent, type) and not isinstance(parent, enum.EnumMeta):
        # From the class and its bases (LibvirtDriver's methods are
        # ComputeDriver's too).
        for holder in parent.__mro__[:-1]:
            if leaf in vars(holder):
                monkeypatch.delattr(holder, leaf)
    else:
        # An enum's members and a ConfigOpts' options cannot be deleted:
        # the holder is replaced by something without them.
        monkeypatch.setattr(holders[-2], parts[-2], types.SimpleNamespace())


def _replace(need, monkeypatch, value):
    parts = need.attribute.split('.')
    parent = importlib.import_module(need.module)
    for part in parts[:-1]:
        parent = getattr(parent, part)
    monkeypatch.setattr(parent, parts[-1], value)


@pytest.fixture(autouse=True)
def fresh_check():
    """The driver's check is cached per process; each test breaks Nova in
    its own way."""
    selfcheck._driver_problems.cache_clear()
    yield
    selfcheck._driver_problems.cache_clear()


def test_driver_check_looks_nova_up_once(monkeypatch):
    """Nova's unit tests build thousands of drivers and count os.stat
    calls: after the first driver, no lookup walks sys.path again."""
    driver = _Driver(_compute_virtapi([]))
    selfcheck.check_driver(driver)
    calls = []
    monkeypatch.setattr(selfcheck, 'nova_version',
                        lambda: calls.append(1) or '34.0.0')
    selfcheck.check_driver(driver)
    assert calls == []


def test_installed_nova_passes():
    assert selfcheck.missing(ALL_NEEDS) == []
    selfcheck.check_api()   # does not raise


@pytest.mark.parametrize('need', [n for n in ALL_NEEDS if n.attribute],
                         ids=lambda n: n.name)
def test_each_missing_name_is_named(need, monkeypatch):
    """A Nova without one of the names refuses, naming it and why."""
    _break(need, monkeypatch)
    problems = selfcheck.missing(ALL_NEEDS)
    assert any(need.name in p and need.why in p for p in problems), problems


@pytest.mark.parametrize(
    'need', [n for n in ALL_NEEDS if n.parameters], ids=lambda n: n.name)
def test_each_dropped_parameter_is_named(need, monkeypatch):
    """A callable that no longer takes a parameter the extension passes is
    refused, naming the parameter."""
    dropped = need.parameters[-1]
    kept = [p for p in need.parameters if p != dropped]
    namespace = {}
    exec('def f(%s): pass' % ', '.join(['self'] + kept), namespace)
    _replace(need, monkeypatch, namespace['f'])
    problems = selfcheck.missing([need])
    assert problems == ['%s takes no parameter %s: %s'
                        % (need.name, dropped, need.why)]


def test_unimportable_module_is_named(monkeypatch):
    """The virt shim missing (an editable install, or a wheel without it)
    is named with what it is for."""
    monkeypatch.setitem(sys.modules, 'nova.virt.livesnapshot', None)
    problems = selfcheck.missing(selfcheck.DRIVER_NEEDS)
    assert len(problems) == 1
    assert problems[0].startswith('cannot import nova.virt.livesnapshot')
    assert 'compute_driver = livesnapshot.LiveSnapshotDriver' in problems[0]


def test_a_module_nova_dropped_is_named_once(monkeypatch):
    """Nova 33 has no nova.thread_pool_factory (two names the endpoint
    uses): one sentence for it."""
    monkeypatch.setitem(sys.modules, 'nova.thread_pool_factory', None)
    problems = selfcheck.missing(selfcheck.LONG_TASK_NEEDS[0])
    assert len(problems) == 1
    assert problems[0].startswith('cannot import nova.thread_pool_factory')


def test_long_task_executor_of_either_nova_will_do(monkeypatch):
    """Nova 34's executor names, or else Nova 33's: the driver starts with
    either set, and without both it names what Nova 34 would have."""
    from nova import utils
    driver = _Driver(_compute_virtapi([]))
    monkeypatch.setitem(sys.modules, 'nova.thread_pool_factory', None)
    with pytest.raises(exception.NovaIncompatible,
                       match='cannot import nova.thread_pool_factory'):
        selfcheck.check_driver(driver)
    # Nova 33's names, as Nova 33.0.2 defines them.

    def spawn_on(executor, func, *args, **kwargs):
        pass

    def get_long_task_executor(max_workers):
        pass
    monkeypatch.setattr(utils, 'spawn_on', spawn_on, raising=False)
    monkeypatch.setattr(utils, 'get_long_task_executor',
                        get_long_task_executor, raising=False)
    selfcheck._driver_problems.cache_clear()
    selfcheck.check_driver(driver)


@pytest.mark.parametrize('version', ['32.2.1', '35.0.0', '35.0.0.0rc1'])
def test_untested_nova_version_is_refused(version, monkeypatch):
    monkeypatch.setattr(selfcheck, 'nova_version', lambda: version)
    with pytest.raises(exception.NovaIncompatible) as e:
        selfcheck.check_api()
    message = str(e.value)
    assert 'Nova %s is not a release this one was tested with' % version \
        in message
    assert str(selfcheck.TESTED_NOVA) in message
    assert 'does not start half-enabled' in message


def test_development_version_of_a_tested_release_passes(monkeypatch):
    monkeypatch.setattr(selfcheck, 'nova_version', lambda: '34.1.1.dev12')
    selfcheck.check_api()


def test_nova_without_metadata_is_refused(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, 'version', absent)
    with pytest.raises(exception.NovaIncompatible, match='no Nova '
                       'distribution is installed'):
        selfcheck.check_api()


def test_service_that_ignores_additional_endpoints_is_refused(monkeypatch):
    """nova-compute must build its RPC server from the manager's
    additional_endpoints, or the driver would run unreachable."""
    from nova import service

    def start(self):
        pass
    monkeypatch.setattr(service.Service, 'start', start)
    assert 'additional_endpoints' in selfcheck._service_start_problem()


class _Driver:
    """What check_driver looks at on a driver: LibvirtDriver's attributes
    and the virt API it was loaded with."""

    def __init__(self, virtapi, host=True, image_api=True):
        from nova.image import glance
        from nova.virt.libvirt import host as libvirt_host
        self.virtapi = virtapi
        if host:
            self._host = libvirt_host.Host('qemu:///system')
        if image_api:
            self._image_api = glance.API()


def _compute_virtapi(endpoints):
    from nova.compute import manager

    class Compute:
        pass
    compute = Compute()
    if endpoints is not None:
        compute.additional_endpoints = endpoints
    # Without ComputeVirtAPI.__init__, which wants a whole manager.
    virtapi = object.__new__(manager.ComputeVirtAPI)
    virtapi._compute = compute
    return virtapi


def test_driver_on_nova_compute_passes():
    selfcheck.check_driver(_Driver(_compute_virtapi([])))


def test_compute_manager_without_additional_endpoints_is_refused():
    with pytest.raises(exception.NovaIncompatible) as e:
        selfcheck.check_driver(_Driver(_compute_virtapi(None)))
    assert 'additional_endpoints is missing' in str(e.value)
    assert str(e.value).startswith('nova-compute (compute_driver = '
                                   'livesnapshot.LiveSnapshotDriver)')


@pytest.mark.parametrize('attr', ['_host', '_image_api'])
def test_driver_without_libvirtdriver_attributes_is_refused(attr):
    driver = _Driver(_compute_virtapi([]), **{attr.lstrip('_'): False})
    with pytest.raises(exception.NovaIncompatible,
                       match='LibvirtDriver.%s' % attr):
        selfcheck.check_driver(driver)


def test_driver_under_another_virtapi_skips_the_endpoint_check():
    """Nova's own driver unit tests load drivers with a fake virt API that
    has no compute manager (make nova-driver-tests)."""
    from nova.virt import fake
    selfcheck.check_driver(_Driver(fake.FakeVirtAPI()))


def test_driver_init_runs_the_check(monkeypatch):
    """LiveSnapshotDriver refuses to be built on an incompatible Nova:
    nova-compute stops at loading its driver."""
    from nova_live_snapshot.virt import driver as driver_mod
    monkeypatch.setattr(driver_mod.libvirt_driver.LibvirtDriver, '__init__',
                        lambda self, virtapi, read_only=False: None)
    monkeypatch.setattr(selfcheck, 'nova_version', lambda: '32.2.1')
    with pytest.raises(exception.NovaIncompatible, match='Nova 32.2.1'):
        driver_mod.LiveSnapshotDriver(None)


def test_filter_factory_runs_the_check(monkeypatch):
    """nova-api does not load a pipeline whose filter cannot work."""
    from nova.compute import api as compute_api
    assert api_filter.filter_factory({}) is api_filter.LiveImageFilter
    monkeypatch.delattr(compute_api.API, 'get')
    with pytest.raises(exception.NovaIncompatible) as e:
        api_filter.filter_factory({})
    assert str(e.value).startswith('nova-api (the live_snapshot paste '
                                   'filter) cannot run')
    assert 'nova.compute.api.API.get is missing' in str(e.value)


# Every nova.* name the package uses is checked -------------------------------

def _nova_names(path):
    """(module, first attribute) for every ``nova.*`` name the module at
    ``path`` imports or reads an attribute of."""
    tree = ast.parse(path.read_text())
    aliases = {}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == 'nova' or node.module.startswith('nova.')):
            for alias in node.names:
                aliases[alias.asname or alias.name] = (node.module,
                                                       alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('nova.'):
                    raise AssertionError('%s: import %s (use from-imports)'
                                         % (path, alias.name))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            package, name = aliases[node.value.id]
            module = '%s.%s' % (package, name)
            try:
                importlib.import_module(module)
            except ImportError:
                # ``from nova.x import Name``: Name is not a module.
                used.add((package, name))
            else:
                used.add((module, node.attr))
    return used


def _covered(module, attr):
    for need in KNOWN_NEEDS:
        if need.module != module:
            continue
        if need.attribute.split('.')[0] == attr or not need.attribute:
            return True
    return False


# Registered Nova objects are read through nova.objects; the check resolves
# them in their own modules (register_all has not run at load time).
_OBJECTS = {('nova.objects', 'InstanceAction'),
            ('nova.objects', 'ComputeNode'),
            ('nova.objects', 'InstanceFaultList')}


def test_every_nova_name_the_package_uses_is_checked():
    uncovered = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for module, attr in sorted(_nova_names(path)):
            if (module, attr) in _OBJECTS:
                continue
            if not _covered(module, attr):
                uncovered.append('%s: %s.%s' % (
                    path.relative_to(PACKAGE.parent), module, attr))
    assert uncovered == []
