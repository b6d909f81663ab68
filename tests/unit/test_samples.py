"""The committed sample configuration and policy file are what their
generators make from the code now (``tox -e genconfig``, ``tox -e
genpolicy`` regenerate them), run as those tox environments run them: from
the generator configs in ``etc/oslo-*-generator``."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BIN = os.path.dirname(sys.executable)


def _output_file(config):
    """The output_file a generator config names (relative to the root)."""
    with open(os.path.join(ROOT, config)) as f:
        for line in f:
            key, _, value = line.partition('=')
            if key.strip() == 'output_file':
                return value.strip()
    raise AssertionError('%s names no output_file' % config)


@pytest.mark.parametrize('tool, config, tox_env', [
    ('oslo-config-generator',
     'etc/oslo-config-generator/nova-live-snapshot.conf', 'genconfig'),
    ('oslopolicy-sample-generator',
     'etc/oslo-policy-generator/nova-live-snapshot-policy.conf', 'genpolicy'),
])
def test_sample_is_current(tool, config, tox_env, tmp_path):
    out = tmp_path / 'sample'
    subprocess.run([os.path.join(BIN, tool), '--config-file',
                    os.path.join(ROOT, config), '--output-file', str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    committed = _output_file(config)
    with open(os.path.join(ROOT, committed)) as f:
        assert out.read_text() == f.read(), (
            '%s is out of date: regenerate it with tox -e %s'
            % (committed, tox_env))
