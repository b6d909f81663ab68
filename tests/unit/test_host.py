"""Facts the host connection derives from its URI, without a daemon."""

import libvirt
import pytest

from nova_live_snapshot import host as host_mod


@pytest.mark.parametrize('uri, run_dir', [
    ('qemu:///system', '/run/libvirt/qemu'),
    ('qemu:///system?socket=/var/cache/nls/backports-root/run/libvirt/'
     'libvirt-sock', '/var/cache/nls/backports-root/run/libvirt/qemu'),
    ('qemu+unix:///system?mode=legacy&socket=/srv/h2/run/libvirt/'
     'virtqemud-sock', '/srv/h2/run/libvirt/qemu'),
])
def test_qemu_pid_files_are_next_to_the_daemon_s_socket(uri, run_dir):
    """A daemon in a root of its own (tools/backports-host.sh) keeps its
    QEMU pid files under that root: the directory follows the socket the
    URI names, and is the local daemon's without one."""
    assert host_mod.Host(uri).qemu_run_dir() == run_dir


def test_a_borrowed_connection_is_asked_for_its_uri():
    """Inside nova-compute the connection is Nova's: the URI it was opened
    with decides (libvirt's own test driver, no daemon, opened without a
    socket), not the Host's default."""
    conn = libvirt.open('test:///default')
    try:
        host = host_mod.Host(uri='qemu:///system?socket=/elsewhere/sock',
                             connection=lambda: conn)
        assert host.qemu_run_dir() == '/run/libvirt/qemu'
    finally:
        conn.close()
