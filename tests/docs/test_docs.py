"""The documentation, the API reference and the release notes build with
Sphinx and openstackdocstheme without a single warning, as ``tox -e docs``,
``tox -e api-ref`` and ``tox -e releasenotes`` build them, and without the
network (no intersphinx inventory is fetched: the machines that build them
have no internet). The release notes pass ``reno lint``."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SOURCES = ['doc/source', 'api-ref/source', 'releasenotes/source']


def _extensions(source):
    with open(os.path.join(ROOT, source, 'conf.py')) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and node.targets[0].id == 'extensions'):
            return ast.literal_eval(node.value)
    return []


@pytest.mark.parametrize('source', SOURCES)
def test_builds_without_warnings(source, tmp_path):
    assert 'sphinx.ext.intersphinx' not in _extensions(source)
    assert 'openstackdocstheme' in _extensions(source)
    result = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b',
         'html', '-d', str(tmp_path / 'doctrees'), source,
         str(tmp_path / 'html')],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'html' / 'index.html').exists()


def test_release_notes_lint():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'reno'), 'lint'],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
