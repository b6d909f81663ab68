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


def _compute_conf(tmp_path, text=''):
    """A ConfigOpts read from one file, as nova-compute's is."""
    path = tmp_path / 'nova-cpu.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf_mod.register_opts(conf)
    conf(['--config-file', str(path)], default_config_files=[])
    return conf


def test_two_compute_hosts_on_one_machine_share_no_directory(tmp_path):
    """Each nova-compute's defaults resolve under its own state_path and
    host: two on one machine share no cache, journal, staging area or
    template directory."""
    conf = _compute_conf(tmp_path)
    a = conf_mod.for_compute_host(conf, '/srv/a/nova', 'host-a')
    b = conf_mod.for_compute_host(conf, '/srv/b/nova', 'host-b')
    assert a.image_dir == '/srv/a/nova/live-snapshot/images'
    assert a.memory_cache_dir == '/srv/a/nova/live-snapshot/cache'
    assert b.memory_cache_dir == '/srv/b/nova/live-snapshot/cache'
    for name in ('image_dir', 'clone_dir', 'memory_cache_dir',
                 'staging_dir', 'template_dir'):
        assert getattr(a, name) != getattr(b, name), name
    # The tmpfs ones stay on tmpfs.
    assert a.staging_dir == '/dev/shm/nova-live-snapshot/host-a'
    assert b.template_dir == '/dev/shm/nova-live-snapshot-templates/host-b'
    # The group itself is left as it was.
    assert conf.live_snapshot.image_dir == '/var/lib/nova-live-snapshot/images'


def test_directories_set_in_the_file_are_kept_for_a_compute_host(tmp_path):
    conf = _compute_conf(tmp_path, '[live_snapshot]\n'
                         'memory_cache_dir = /srv/cache\n'
                         'staging_dir = /dev/shm/mine\n')
    values = conf_mod.for_compute_host(conf, '/srv/a/nova', 'host-a')
    assert values.memory_cache_dir == '/srv/cache'
    assert values.staging_dir == '/dev/shm/mine'
    assert values.image_dir == '/srv/a/nova/live-snapshot/images'


def test_the_engine_assumes_no_libvirt_uri():
    """Unset, the standalone engine opens libvirt's default URI (None)."""
    assert conf_mod.new().connection_uri is None
