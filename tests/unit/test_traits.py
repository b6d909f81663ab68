"""The compatibility traits: a host advertises what its QEMU can resume, a
live image requires what the host that captured it had, and the scheduler
matches them (required traits a subset of the host's)."""

from nova_live_snapshot.virt import traits

HOST_7_2 = dict(arch='x86_64', machine_types={'pc', 'pc-i440fx-7.2',
                                              'pc-q35-7.2', 'q35'},
                qemu_version='7.2.22', cpu_models={'EPYC', 'qemu64'})


def _image(machine='pc-i440fx-7.2', qemu='7.2.22', cpu='EPYC'):
    return traits.image_traits('x86_64', machine, qemu, cpu)


def test_an_image_is_restorable_on_the_host_that_captured_it():
    assert _image() <= traits.host_traits(**HOST_7_2)


def test_every_trait_is_a_valid_custom_trait_of_the_project():
    for name in traits.host_traits(**HOST_7_2) | _image():
        assert name.startswith('CUSTOM_LIVE_SNAPSHOT_'), name
        assert name.replace('_', 'A').isalnum() and name.isupper(), name
        assert len(name) <= 255
    assert 'CUSTOM_LIVE_SNAPSHOT_MACHINE_PC_I440FX_7_2' in _image()


def test_a_newer_qemu_resumes_an_older_one_s_image_not_the_reverse():
    newer = dict(HOST_7_2, qemu_version='8.2.2',
                 machine_types=HOST_7_2['machine_types'] | {'pc-q35-8.2'})
    assert _image() <= traits.host_traits(**newer)
    from_newer = _image(machine='pc-q35-7.2', qemu='8.2.2')
    assert not from_newer <= traits.host_traits(**HOST_7_2)
    # Every release from 6.0 to the host's own, whatever its patch level.
    host = traits.host_traits(**newer)
    for release in ('6.0', '6.2', '7.1', '8.0', '8.2'):
        assert 'CUSTOM_LIVE_SNAPSHOT_QEMU_%s' % release.replace(
            '.', '_') in host, release
    assert 'CUSTOM_LIVE_SNAPSHOT_QEMU_9_0' not in host


def test_a_host_without_the_machine_type_or_cpu_model_is_not_chosen():
    host = traits.host_traits(**HOST_7_2)
    assert not _image(machine='pc-i440fx-9.0') <= host
    assert not _image(cpu='Cascadelake-Server') <= host
    # No CPU model recorded: none required.
    assert _image(cpu='') <= host
    assert not any('_CPU_' in t for t in _image(cpu=''))


def test_old_and_unversioned_machine_types_have_no_trait():
    """The trait request nova-compute makes must stay short (see the
    module): aliases and machine types older than QEMU 6.0 get none, and
    an image of one requires none."""
    host = traits.host_traits(**dict(HOST_7_2, machine_types=HOST_7_2[
        'machine_types'] | {'pc-i440fx-2.12', 'isapc', 'microvm'}))
    machines = {t for t in host if '_MACHINE_' in t}
    assert machines == {'CUSTOM_LIVE_SNAPSHOT_MACHINE_PC_I440FX_7_2',
                        'CUSTOM_LIVE_SNAPSHOT_MACHINE_PC_Q35_7_2'}
    assert not any('_MACHINE_' in t for t in _image(machine='pc-i440fx-2.12'))
    assert _image(machine='pc-i440fx-2.12') <= host


def test_another_architecture_is_not_chosen():
    arm = dict(HOST_7_2, arch='aarch64')
    assert not _image() <= traits.host_traits(**arm)
