"""The test cloud's service users, and the one thing root does for them.

Distributions run every OpenStack service as a user of its own (Debian's
``nova``, ``glance``, ``keystone``, ``placement``, ``neutron``), and so does
this cloud: each service's processes get its user, its group and the
supplementary groups it needs, and nothing of root. What needs root goes
through oslo.privsep: the service starts ``privsep-helper`` with sudo, and
a sudoers rule (:func:`sudoers`) lets it run exactly that helper with its
own configuration file and a named privsep context, nothing else; the
helper keeps only the capabilities its context declares.

nova's supplementary groups:

* ``libvirt``: libvirtd's read-write socket (Debian's libvirt-daemon-system
  grants that group access through polkit; with no polkit here, the
  socket's group: ``unix_sock_group``, tools/setup-host.sh for host A,
  computehost.py for host B);
* ``libvirt-qemu``: the QEMU group, so that nova-compute can give the files
  clones read (frozen disks, templates) that group and keep them its own
  (nova_live_snapshot/ownership.py);
* ``kvm``, as Debian's nova-compute-kvm adds it.

Users and groups are system accounts made once per machine; the sudoers
file is rewritten for every cloud (it names this cloud's virtualenv and
configuration files) and checked with ``visudo -c`` before it is put in
place.
"""

import grp
import os
import pwd
import subprocess
import sys

#: user: its supplementary groups (each made if missing)
SERVICE_ACCOUNTS = {
    'nova': ('libvirt', 'libvirt-qemu', 'kvm'),
    'glance': (),
    'keystone': (),
    'placement': (),
    'neutron': (),
}
#: The group of libvirtd's read-write socket.
LIBVIRT_GROUP = 'libvirt'
SUDOERS = '/etc/sudoers.d/nls-cloud'
#: The privsep contexts nova-compute starts, each through sudo: Nova's,
#: os-vif's OVS plugin's, os-brick's (by its config section).
NOVA_PRIVSEP_CONTEXTS = {
    'nova_sys_admin': 'nova.privsep.sys_admin_pctxt',
    'vif_plug_ovs_privileged': 'vif_plug_ovs.privsep.vif_plug',
    'privsep_osbrick': 'os_brick.privileged.default',
}


def _run(argv):
    subprocess.run(argv, check=True, capture_output=True, text=True)


def ensure_group(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run(['groupadd', '--system', name])
        return grp.getgrnam(name).gr_gid


def ensure_users(log):
    """Every service account, its own group and its supplementary groups;
    a home under /var/lib as Debian's packages make."""
    for user, groups in SERVICE_ACCOUNTS.items():
        for group in groups:
            ensure_group(group)
        try:
            pwd.getpwnam(user)
        except KeyError:
            ensure_group(user)
            _run(['useradd', '--system', '--gid', user, '--home-dir',
                  '/var/lib/%s' % user, '--create-home', '--shell',
                  '/usr/sbin/nologin', user])
            log('made system user %s', user)
        missing = [g for g in groups
                   if user not in grp.getgrnam(g).gr_mem]
        if missing:
            _run(['usermod', '--append', '--groups', ','.join(missing), user])
            log('added %s to %s', user, ', '.join(missing))


def ids(user):
    """(uid, gid, [supplementary gids]) of ``user``, for subprocess."""
    pw = pwd.getpwnam(user)
    groups = [g for g in os.getgrouplist(user, pw.pw_gid) if g != pw.pw_gid]
    return pw.pw_uid, pw.pw_gid, groups


def grant_interpreter(users, log):
    """Let ``users`` reach the virtualenv's interpreter.

    The virtualenv's python may be a link into a directory only root may
    enter (a pyenv build under /root on the development machines): each
    directory on the way that others cannot traverse gets an ACL entry
    letting these users traverse it, and nothing more.
    """
    target = os.path.realpath(sys.executable)
    paths = [os.path.realpath(os.path.join(sys.prefix, 'bin')), target]
    for path in paths:
        directory = os.path.dirname(path)
        while directory != '/':
            mode = os.stat(directory).st_mode
            if not mode & 0o001:
                for user in users:
                    _run(['setfacl', '-m', 'u:%s:x' % user, directory])
                log('%s: traversable for %s (ACL)', directory,
                    ', '.join(users))
            directory = os.path.dirname(directory)


def sudoers(venv, nova_config_files):
    """The sudoers rules: nova may start ``privsep-helper`` as root with one
    of ``nova_config_files`` and one of :data:`NOVA_PRIVSEP_CONTEXTS`, on a
    socket in a fresh temporary directory (oslo.privsep's), and nothing
    else. Regular expressions (sudo 1.9.10+) so that no wildcard can add
    arguments."""
    helper = os.path.join(venv, 'bin', 'privsep-helper')
    lines = ['# Written by tools/cloud/accounts.py for the test cloud.',
             'Defaults:nova !requiretty']
    contexts = '|'.join(c.replace('.', r'\.')
                        for c in NOVA_PRIVSEP_CONTEXTS.values())
    for conf in nova_config_files:
        # sudoers: a regular expression starts with ^ and ends with $;
        # its special characters need no escaping beyond the regex's own
        # but for the sudoers ones (',', ':', '=', '\\').
        lines.append(
            'nova ALL = (root) NOPASSWD: %s ^--config-file %s '
            '--privsep_context (%s) --privsep_sock_path '
            '/tmp/tmp[a-z0-9_]+/privsep\\.sock$' % (
                helper, conf.replace('.', r'\.'), contexts))
    return '\n'.join(lines) + '\n'


def install_sudoers(text, log):
    """Put the rules in place once ``visudo -c`` accepts them."""
    tmp = SUDOERS + '.new'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    check = subprocess.run(['visudo', '-c', '-q', '-f', tmp],
                           capture_output=True, text=True)
    if check.returncode:
        os.unlink(tmp)
        raise RuntimeError('visudo refused the rules: %s%s'
                           % (check.stdout, check.stderr))
    os.rename(tmp, SUDOERS)
    log('sudoers rules in %s', SUDOERS)


def privsep_sections(venv, config_file):
    """nova-compute's privsep sections: each context's helper started
    through sudo with the full path of the virtualenv's privsep-helper
    (sudo's secure_path would not find it)."""
    helper = 'sudo %s --config-file %s' % (
        os.path.join(venv, 'bin', 'privsep-helper'), config_file)
    return '\n\n'.join('[%s]\nhelper_command = %s' % (section, helper)
                       for section in NOVA_PRIVSEP_CONTEXTS)


def chown_tree(path, user, group=None):
    """``path`` and everything under it owned by ``user``."""
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    os.chown(path, pw.pw_uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, gid,
                     follow_symlinks=False)


def readable_by(path, group):
    """A configuration file root's and readable by ``group`` (0640), as
    /etc/nova/nova.conf is root:nova in Debian."""
    os.chown(path, 0, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o640)
