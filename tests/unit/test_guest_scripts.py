"""The guest scripts of re-identification are shell files that a linter
reads, and the module loads what is in them."""

import os
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
