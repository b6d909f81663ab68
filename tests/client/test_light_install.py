"""The ``openstack server live-image`` plugin installed on its own: the
``nova-live-snapshot-client`` distribution (``client/``) in a fresh venv
with python-openstackclient and nothing of the compute side.

The venv is built from scratch for the session (``python3 -m venv``, pip
from the package index, constraints from upper-constraints.txt), from a copy
of the sources so that the build leaves nothing in the checkout. It takes
about a minute, most of it pip.
"""

import configparser
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
COMMANDS = ('create', 'list', 'show', 'delete')


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    """``bin`` of a venv with the light client and python-openstackclient."""
    tmp = tmp_path_factory.mktemp('light-client')
    src = tmp / 'src'
    ignore = shutil.ignore_patterns('__pycache__', 'build', '*.egg-info')
    for part in ('client', 'nova_live_snapshot'):
        shutil.copytree(os.path.join(ROOT, part), src / part, ignore=ignore)
    env = tmp / 'venv'
    python = getattr(sys, '_base_executable', None) or shutil.which('python3')
    subprocess.run([python, '-m', 'venv', str(env)], check=True)
    bin_dir = env / 'bin'
    done = subprocess.run(
        [str(bin_dir / 'pip'), 'install', '-q', '-c',
         os.path.join(ROOT, 'upper-constraints.txt'), str(src / 'client'),
         'python-openstackclient'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def _run(venv, *argv):
    # Outside the checkout: from its root, "import nova" would find the
    # re-export package there and nova_live_snapshot the source tree.
    return subprocess.run([str(venv / argv[0])] + list(argv[1:]),
                          capture_output=True, text=True, cwd=venv)


def _python(venv, code):
    return _run(venv, 'python', '-c', code)


@pytest.mark.parametrize('module', ['nova', 'libvirt', 'lxml'])
def test_the_compute_side_is_not_installed(venv, module):
    result = _python(venv, 'import %s' % module)
    assert result.returncode != 0
    assert "No module named '%s'" % module in result.stderr


def test_only_the_plugin_and_the_shared_names_are_installed(venv):
    result = _python(venv, (
        'import os, nova_live_snapshot as p\n'
        'root = os.path.dirname(p.__file__)\n'
        'print(sorted(os.path.relpath(os.path.join(d, f), root)'
        ' for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")))'))
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout) == [
        '__init__.py', 'osc/__init__.py', 'osc/client.py', 'osc/plugin.py',
        'osc/v1/__init__.py', 'osc/v1/live_image.py', 'protocol.py']


def test_openstack_lists_the_live_image_commands(venv):
    result = _run(venv, 'openstack', 'command', 'list', '--group',
                  'live_snapshot', '-f', 'json')
    assert result.returncode == 0, result.stderr
    (group,) = json.loads(result.stdout)
    assert sorted(group['Commands']) == sorted(
        'server live-image %s' % c for c in COMMANDS)


@pytest.mark.parametrize('command, option', [
    ('create', '--wait-timeout'), ('list', '--long'), ('show', '<image>'),
    ('delete', '<image>')])
def test_each_command_parses_its_arguments(venv, command, option):
    result = _run(venv, 'openstack', 'server', 'live-image', command,
                  '--help')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: openstack server live-image %s'
                                    % command)
    assert option in result.stdout


def test_the_client_declares_the_full_package_s_entry_points(venv):
    """client/setup.py repeats setup.cfg's plugin entry points: both
    distributions must offer the same commands."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, 'setup.cfg'))
    full = set()
    for group in ('openstack.cli.extension', 'openstack.live_snapshot.v1'):
        for line in cfg['entry_points'][group].strip().splitlines():
            name, value = (p.strip() for p in line.split('='))
            full.add((group, name, value))
    result = _python(venv, (
        'import importlib.metadata as m\n'
        'print([(e.group, e.name, e.value) for e in '
        'm.distribution("nova-live-snapshot-client").entry_points])'))
    assert result.returncode == 0, result.stderr
    assert set(map(tuple, eval(result.stdout))) == full
