"""The host side of re-identification, without a guest: how steps are
batched into one shell script, how their reports are read back, and what a
report says. The batches run under this host's real /bin/sh, as they would
under the guest's."""

import base64
import os
import stat
import subprocess

import pytest

from nova_live_snapshot import exception
from nova_live_snapshot import identity


class ShellGuest:
    """Runs ``agent_exec`` on this host, as qemu-ga's guest-exec would in
    the guest (argv, stdin bytes, exit code and both outputs)."""

    name = 'host-shell'

    def __init__(self, fail=False):
        self.fail = fail
        self.runs = []

    def agent_exec(self, argv, timeout=30, stdin=None):
        self.runs.append(argv)
        if self.fail:
            raise exception.GuestAgentError(domain=self.name,
                                            reason='guest-exec failed')
        done = subprocess.run(argv, input=stdin or b'', capture_output=True,
                              timeout=timeout)
        return done.returncode, done.stdout, done.stderr


def _steps(guest, **kw):
    new = identity.NewIdentity(name='clone-1', uuid='u-1', mac=None,
                               old_mac=None, hostname='clone-1', **kw)
    return identity._Steps(guest, new, timeout=30)


@pytest.mark.parametrize('name, label', [
    ('nlst-ab12-clone-0', 'nlst-ab12-clone-0'),
    ('Web_Server.01', 'web-server-01'),
    ('--x--', 'x'),
    ('___', 'clone'),
    ('a' * 80, 'a' * 63),
])
def test_hostname_for_makes_a_valid_label(name, label):
    assert identity.hostname_for(name) == label


def test_hooks_run_in_order_with_the_clone_name_and_uuid(tmp_path):
    """One batch, the real hooks script: executables run by name with the
    clone's name and UUID, other files are left alone."""
    hooks = tmp_path / 'clone.d'
    hooks.mkdir()
    out = tmp_path / 'ran'
    for name in ('20-second', '10-first'):
        hook = hooks / name
        hook.write_text('#!/bin/sh\necho "%s $1 $2" >> %s\n' % (name, out))
        hook.chmod(0o755)
    (hooks / '30-not-executable').write_text('#!/bin/sh\nexit 1\n')
    batch = identity._Batch()
    batch.add('hooks', identity._HOOKS_SCRIPT, 'clone-1', 'u-1', str(hooks))
    reports = _steps(ShellGuest()).run(batch)
    assert reports['hooks'].status == identity.Status.DONE
    assert reports['hooks'].detail == 'ran: 10-first 20-second'
    assert out.read_text() == '10-first clone-1 u-1\n20-second clone-1 u-1\n'


def test_a_failing_step_does_not_end_the_batch(tmp_path):
    """Each step runs in its own subshell: a failure (exit 1) and a skip
    (exit 3) are reported and the next step still runs."""
    batch = identity._Batch()
    batch.add('a', '\necho before; exit 1\n')
    batch.add('b', '\nexit 3\n')
    batch.add('hooks', identity._HOOKS_SCRIPT, 'c', 'u',
              str(tmp_path / 'missing'))
    batch.add('d', '\necho "$1"\n', 'an argument with spaces; $(not run)')
    reports = _steps(ShellGuest()).run(batch)
    assert reports['a'].status == identity.Status.FAILED
    assert reports['a'].detail == 'exit 1: before'
    assert reports['b'].status == identity.Status.SKIPPED
    assert reports['hooks'].status == identity.Status.SKIPPED
    assert reports['d'].status == identity.Status.DONE
    assert reports['d'].detail == 'an argument with spaces; $(not run)'
    assert all(r.seconds is not None and r.seconds >= 0
               for r in reports.values())


def test_staged_files_reach_the_step_and_are_removed(tmp_path):
    """Seeds and keys travel as a tar on stdin into a private directory the
    step sees as its argument; nothing of it is on the command line, and
    the directory is gone afterwards."""
    secret = base64.b16encode(os.urandom(16)).decode()
    batch = identity._Batch()
    batch.add('show', '\nstat -c %a "$1"; cat "$1/seed"; echo; echo "$1"\n',
              identity._STAGED)
    batch.files = {'seed': secret.encode()}
    guest = ShellGuest()
    reports = _steps(guest).run(batch)
    mode, seed, staged = reports['show'].detail.splitlines()
    assert seed == secret
    assert mode == '700'
    assert not os.path.exists(staged)
    assert all(secret not in arg for arg in guest.runs[0])


def test_output_that_looks_like_a_report_line_is_kept_as_output():
    """The marker is random per batch: a step cannot forge another's
    report."""
    batch = identity._Batch()
    batch.add('a', '\necho "@nls-0000 b 0 1.0 2.0"\n')
    batch.add('b', '\nexit 1\n')
    reports = _steps(ShellGuest()).run(batch)
    assert reports['a'].status == identity.Status.DONE
    assert reports['a'].detail == '@nls-0000 b 0 1.0 2.0'
    assert reports['b'].status == identity.Status.FAILED


def test_a_batch_the_agent_cannot_run_fails_each_of_its_steps():
    batch = identity._Batch()
    batch.add('a', '\ntrue\n')
    batch.add('b', '\ntrue\n')
    reports = _steps(ShellGuest(fail=True)).run(batch)
    assert [r.status for r in reports.values()] == [identity.Status.FAILED] * 2
    assert all('guest-exec failed' in r.detail for r in reports.values())


def test_a_script_that_dies_early_fails_the_steps_it_never_reached():
    batch = identity._Batch()
    batch.add('a', '\nkill -9 $$\n')
    batch.add('b', '\ntrue\n')
    reports = _steps(ShellGuest()).run(batch)
    assert reports['b'].status == identity.Status.FAILED
    assert 'ended (exit -9) before this step' in reports['b'].detail


def test_report_is_reset_only_when_the_agent_answered_and_nothing_failed():
    done = identity.StepReport('mac', identity.Status.DONE, 'eth0')
    skipped = identity.StepReport('hooks', identity.Status.SKIPPED)
    failed = identity.StepReport('clock', identity.Status.FAILED, 'x')
    assert identity.IdentityReport(agent=True, steps=(done, skipped)).reset
    assert not identity.IdentityReport(agent=True, steps=(done, failed)).reset
    assert not identity.not_reset('no agent').reset
    as_dict = identity.IdentityReport(agent=True, steps=(done,),
                                      facts={'mac': 'm'}).to_dict()
    assert as_dict == {'agent': True, 'reset': True, 'facts': {'mac': 'm'},
                       'steps': [{'step': 'mac', 'status': 'done',
                                  'detail': 'eth0', 'seconds': None}]}


def test_staged_files_keep_their_modes(tmp_path):
    """A public host key is staged 0644 and its private key 0600, so that
    the guest moves them into place without a chmod process."""
    batch = identity._Batch()
    batch.add('show', '\nstat -c "%n %a" "$1"/k "$1"/k.pub\n',
              identity._STAGED)
    batch.files = {'k': (b'private', 0o600), 'k.pub': (b'public', 0o644)}
    report = _steps(ShellGuest()).run(batch)['show']
    modes = dict(line.split()[::-1] for line in report.detail.splitlines())
    assert sorted(modes) == ['600', '644']
    assert modes['600'].endswith('/k') and modes['644'].endswith('/k.pub')


def test_host_made_keys_are_real_keys_with_their_fingerprints():
    """The host makes ed25519, ecdsa and RSA host keys for a clone in the
    background (ssh-keygen here); each comes with sshd's modes and the
    fingerprint the report will show."""
    files, fingerprints = identity.prepare('clone-1').host_keys()
    assert sorted(fingerprints) == sorted(identity.HOST_KEY_TYPES)
    for key_type, line in fingerprints.items():
        name = 'ssh_host_%s_key' % key_type
        private, mode = files[name]
        public, pub_mode = files[name + '.pub']
        assert (mode, pub_mode) == (0o600, 0o644)
        assert b'PRIVATE KEY' in private
        assert public.rstrip().endswith(b'root@clone-1')
        listed = subprocess.run(['ssh-keygen', '-lf', '-'], input=public,
                                capture_output=True, check=True).stdout
        assert listed.decode().strip() == line


def test_a_failed_step_keeps_the_link_down_and_the_hooks_unrun():
    """When any step before the network failed, the link is never set up
    (the clone fails: it must not reach the network with part of its
    source's identity) and the report says why for both later steps."""
    steps = _steps(ShellGuest(fail=True))
    steps.record('mac', identity.Status.DONE, 'eth0')
    steps.record('entropy', identity.Status.FAILED, 'exit 1: no /dev/random')
    steps.facts['interface'] = 'eth0'
    steps.dhcp_stop = identity.StepReport('network', identity.Status.DONE,
                                          'networkd\neth0')
    raised = []
    steps.connect(lambda: raised.append('up'), '/nonexistent')
    assert raised == []
    reports = {r.step: r for r in steps.ordered()}
    assert reports['network'].status == identity.Status.FAILED
    assert 'link left down: entropy failed' in reports['network'].detail
    assert reports['hooks'].status == identity.Status.SKIPPED
    assert [r.step for r in steps.ordered()] == ['mac', 'entropy',
                                                 'network', 'hooks']


@pytest.mark.parametrize('stop', [
    identity.StepReport('network', identity.Status.FAILED,
                        'exit 1: process 85 did not end'),
    identity.StepReport('network', identity.Status.DONE,
                        "sh: can't kill pid 85: No such process\nudhcpc"),
])
def test_a_dhcp_client_not_seen_to_stop_keeps_the_link_down(stop):
    """Stopping the source's DHCP client failed, or it answered with no
    client it knows: no other step failed, but the link stays down (the
    old client may still hold the source's lease), no DHCP client is
    started and the hooks do not run."""
    guest = ShellGuest(fail=True)
    steps = _steps(guest)
    steps.record('mac', identity.Status.DONE, 'eth0')
    steps.facts['interface'] = 'eth0'
    steps.dhcp_stop = stop
    raised = []
    steps.connect(lambda: raised.append('up'), '/nonexistent')
    assert raised == []
    assert guest.runs == []
    reports = {r.step: r for r in steps.ordered()}
    assert reports['network'].status == identity.Status.FAILED
    assert reports['network'].detail.startswith(
        'stopping the DHCP client, link left down: ')
    assert reports['hooks'].status == identity.Status.SKIPPED


def test_a_steps_stderr_never_becomes_its_answer():
    """A step's answer is its standard output alone: what it writes to
    stderr (a kill that found its process gone, a warning) is not read as
    data, and is shown only when the step fails, after its output."""
    batch = identity._Batch()
    batch.add('stop', '\necho "kill: no such process" >&2; echo udhcpc;'
                      ' echo eth0\n')
    batch.add('bad', '\necho partial; echo "the reason" >&2; exit 1\n')
    batch.add('next', '\necho still\n')
    reports = _steps(ShellGuest()).run(batch)
    assert reports['stop'].status == identity.Status.DONE
    assert reports['stop'].detail == 'udhcpc\neth0'
    assert reports['bad'].detail == 'exit 1: partial\nthe reason'
    assert reports['next'].detail == 'still'


def test_ssh_report_names_the_keys_and_how_sshd_took_them():
    """The guest's first half says which types it had, which it made
    itself and that sshd was sent SIGHUP; the report lists the host-made
    keys' fingerprints and the guest-made ones', and the reloaded sshd is
    checked after link up."""
    steps = _steps(ShellGuest())
    first = identity.StepReport(
        'ssh_host_keys', identity.Status.DONE,
        'types ed25519 dsa\nmade dsa\nsshd hup 412 1001 1002\n'
        '1024 SHA256:dsa root@clone-1 (DSA)', 0.5)
    steps.ssh_keys(first, {'ed25519': '256 SHA256:ed root@clone-1 (ED25519)',
                           'rsa': '3072 SHA256:rsa root@clone-1 (RSA)'})
    assert steps.facts['ssh_host_keys'] == [
        '256 SHA256:ed root@clone-1 (ED25519)',
        '1024 SHA256:dsa root@clone-1 (DSA)']
    assert steps.sshd == ['412', '1001', '1002']
    report = steps.reports['ssh_host_keys']
    assert report.status == identity.Status.DONE
    assert 'sshd 412 reloaded (SIGHUP)' in report.detail


def test_new_identities_get_distinct_machine_ids():
    a, b = (identity.NewIdentity('n', 'u', None, None, 'h') for _ in 'ab')
    assert a.machine_id != b.machine_id
    assert len(a.machine_id) == 32 and int(a.machine_id, 16) >= 0


def test_guest_scripts_are_not_executable_files():
    """They are function bodies of a batch, not programs to run alone on
    the host: shipped as data (0644)."""
    scripts = os.path.join(os.path.dirname(identity.__file__),
                           'guest_scripts')
    for name in os.listdir(scripts):
        mode = os.stat(os.path.join(scripts, name)).st_mode
        assert not mode & stat.S_IXUSR, name
