"""The configuration: defaults operators rely on, and the sample on disk
matches the code."""

import os
import subprocess
import sys

from oslo_config import cfg

from nova_live_snapshot import conf as conf_mod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_defaults():
    opts = conf_mod.new()
    assert opts.capture_mode == 'live'
    assert opts.memory_staging == 'auto'
    assert opts.staging_dir.startswith('/dev/shm/')
    # Lazy clones are experimental: off, and never silently eager.
    assert opts.restore_mode == 'eager'
    assert opts.template_dir.startswith('/dev/shm/')
    assert opts.lazy_fallback_to_eager is False


def test_overrides_do_not_leak_between_configs():
    a = cfg.ConfigOpts()
    conf_mod.register_opts(a)
    a([], default_config_files=[])
    a.set_override('capture_mode', 'save', group='live_snapshot')
    assert conf_mod.new().capture_mode == 'live'


def test_sample_config_is_current(tmp_path):
    out = tmp_path / 'sample.conf'
    subprocess.run([os.path.join(os.path.dirname(sys.executable),
                                 'oslo-config-generator'),
                    '--namespace', 'nova_live_snapshot',
                    '--output-file', str(out)], check=True)
    with open(os.path.join(ROOT, 'etc', 'nova-live-snapshot.conf.sample')) as f:
        assert out.read_text() == f.read(), \
            'regenerate etc/nova-live-snapshot.conf.sample (tox -e genconfig)'
