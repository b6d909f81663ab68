"""The guest scripts of re-identification are shell files that a linter
reads, and the module loads what is in them."""

import os
import re
import shutil
import subprocess

import pytest

from nova_live_snapshot import identity

SCRIPTS = os.path.join(os.path.dirname(identity.__file__), 'guest_scripts')
NAMES = sorted(n[:-len('.sh')] for n in os.listdir(SCRIPTS)
               if n.endswith('.sh'))


def test_every_step_script_is_a_file():
    """Each script identity.py runs comes from a file, and every file is
    used (none stays behind when a step goes)."""
    loaded = {value for name, value in vars(identity).items()
              if name.endswith('_SCRIPT')}
    assert NAMES
    assert {identity.guest_script(n) for n in NAMES} == loaded


@pytest.mark.parametrize('name', NAMES)
def test_no_input_redirection_escapes_its_silencing(name):
    """``cmd < file 2>/dev/null`` opens the file before stderr is silenced,
    so a file gone in the meantime (a /proc entry of a process that just
    ended) prints the shell's error anyway: stderr first."""
    with open(os.path.join(SCRIPTS, name + '.sh')) as f:
        for number, line in enumerate(f, 1):
            code = line.split('#', 1)[0]
            # The rest of each simple command after an input redirection.
            rests = [re.split(r'[;&|})]', rest, maxsplit=1)[0]
                     for rest in re.split(r'(?<![<0-9])<(?![<(])', code)[1:]]
            assert not any('2>/dev/null' in rest for rest in rests), (
                '%s.sh:%d silences stderr after its input redirection: %s'
                % (name, number, line.strip()))


@pytest.mark.parametrize('name', NAMES)
def test_guest_script_passes_shellcheck(name):
    """POSIX sh (busybox's ash and dash alike), every shellcheck finding
    fixed or disabled with its reason next to it."""
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.fail('shellcheck is not installed (bindep.txt lists it; '
                    'tools/setup-host.sh installs it)', pytrace=False)
    path = os.path.join(SCRIPTS, name + '.sh')
    result = subprocess.run([shellcheck, '--shell=sh', '--severity=style',
                             path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('name', NAMES)
def test_loaded_script_leaves_out_only_the_header(name):
    """What runs in the guest is the file without its leading comment
    block: the same commands, in the same order."""
    with open(os.path.join(SCRIPTS, name + '.sh')) as f:
        text = f.read()
    assert text.startswith('#!/bin/sh\n')
    body = identity.guest_script(name)
    assert not body.lstrip('\n').startswith('#')
    assert text.endswith(body.lstrip('\n'))


_LISTENERS = '''
. "$1"
python3 -c 'import socket, time
s = socket.socket(socket.AF_INET6); s.bind(("::", 5999)); s.listen()
time.sleep(60)' &
other=$!
python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 5998)); s.listen()
time.sleep(60)' &
mine=$!
i=0
until grep -q " 0A " /proc/net/tcp6 && grep -q " 0A " /proc/net/tcp; do
    i=$((i + 1)); [ $i -lt 300 ] || exit 9
    sleep 0.05
done
out=$(sshd_listeners $mine)
rc=$?
kill $other $mine
echo "$rc $out"
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                    reason='needs root for a network namespace of its own')
def test_sshd_listeners_succeeds_whoever_listens_last(tmp_path):
    """In a namespace of its own (so the tables hold only these two), one
    process listens on IPv4 and another on IPv6, last in the tables: the
    function finds the first one's socket and succeeds (it used to return
    the status of its last comparison, 1, and the SSH step failed on the
    apps guest, whose PostgreSQL and JVM listen after sshd)."""
    script = tmp_path / 'probe.sh'
    script.write_text(_LISTENERS)
    lib = os.path.join(SCRIPTS, 'sshd-listeners.sh')
    out = subprocess.run(
        ['unshare', '-n', 'sh', '-c', 'ip link set lo up && sh "$0" "$1"',
         str(script), lib], capture_output=True, text=True, timeout=60,
        check=True).stdout.split()
    assert out[0] == '0', out
    assert len(out) == 2 and out[1].isdigit(), out
