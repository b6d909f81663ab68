"""tools/lib/apt-sources.sh: the keyring the host's apt checks a source
with, read from deb822 and one-line sources as apt numbers their entries
(``apt-get indextargets``' SOURCESENTRY: FILE:stanza for .sources, FILE:line
for .list), so that the Debian guest builder's debootstrap checks the
repository with the same key."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
LIB = os.path.join(ROOT, 'tools', 'lib', 'apt-sources.sh')


def keyring(entry):
    result = subprocess.run(
        ['bash', '-euo', 'pipefail', '-c',
         '. "$1"; source_keyring "$2"', 'bash', LIB, entry],
        capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def keys(tmp_path):
    for name in ('main.gpg', 'security.gpg', 'local.gpg'):
        (tmp_path / name).write_bytes(b'not really a key')
    return tmp_path


def test_deb822_stanza_by_number(keys):
    sources = keys / 'debian.sources'
    sources.write_text(f"""Types: deb
# a comment inside the stanza
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {keys}/main.gpg

Types: deb
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main
signed-by: {keys}/security.gpg
""")
    assert keyring(f'{sources}:1') == f'{keys}/main.gpg'
    # Field names are case-insensitive.
    assert keyring(f'{sources}:2') == f'{keys}/security.gpg'


def test_one_line_entry_by_line(keys):
    listing = keys / 'local.list'
    listing.write_text(f"""# deb http://commented.test/debian bookworm main
deb [arch=amd64 signed-by={keys}/local.gpg] http://mirror.test/debian bookworm main
deb http://other.test/debian bookworm main
""")
    assert keyring(f'{listing}:2') == f'{keys}/local.gpg'
    assert keyring(f'{listing}:3') == ''


@pytest.mark.parametrize('signed_by', [
    '',                                          # none: default keyring
    'A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0',  # a fingerprint
    '/nonexistent/key.gpg',                      # no such file
    '\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n xyz',  # an inline key
])
def test_anything_but_one_existing_file_gives_the_default(keys, signed_by):
    sources = keys / 'x.sources'
    field = f'Signed-By: {signed_by}\n' if signed_by else ''
    sources.write_text('Types: deb\nURIs: http://mirror.test/debian\n'
                       f'Suites: bookworm\nComponents: main\n{field}')
    assert keyring(f'{sources}:1') == ''


def test_unreadable_file_gives_the_default(tmp_path):
    assert keyring(f'{tmp_path}/gone.sources:1') == ''
