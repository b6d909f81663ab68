"""The configuration: defaults operators rely on (the sample on disk is
checked in test_samples.py)."""

from oslo_config import cfg

from nova_live_snapshot import conf as conf_mod


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
