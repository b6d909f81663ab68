"""nova-live-snapshot-client: the ``openstack server live-image`` plugin
alone, with its own light requirements (osc-lib, openstacksdk).

OpenStack ships clients apart from services; this distribution is built
from the same source tree as the full package (``package_dir`` points one
level up) but carries only the plugin (``nova_live_snapshot.osc``) and the
names it shares with the services (``nova_live_snapshot.protocol``): no
Nova, no libvirt-python, no lxml. Install one of the two distributions into
an environment, not both: the full package includes the plugin.
"""

import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(os.path.dirname(HERE), 'nova_live_snapshot')


def requirements():
    with open(os.path.join(HERE, 'requirements.txt')) as f:
        return [line.split('#')[0].strip() for line in f
                if line.strip() and not line.startswith('#')]


setuptools.setup(
    name='nova-live-snapshot-client',
    version='0.0.1',
    description='OpenStackClient plugin for nova-live-snapshot live images',
    license='Apache-2.0',
    python_requires='>=3.11',
    install_requires=requirements(),
    package_dir={'nova_live_snapshot': os.path.relpath(SOURCE, HERE)},
    # The package's __init__ comes with protocol.py; of its subpackages only
    # the plugin.
    py_modules=['nova_live_snapshot.protocol'],
    packages=['nova_live_snapshot.osc', 'nova_live_snapshot.osc.v1'],
    # The same entry points as the full package's setup.cfg
    # (tests/client checks that they agree).
    entry_points={
        'openstack.cli.extension': [
            'live_snapshot = nova_live_snapshot.osc.plugin',
        ],
        'openstack.live_snapshot.v1': [
            'server_live-image_create = '
            'nova_live_snapshot.osc.v1.live_image:CreateLiveImage',
            'server_live-image_list = '
            'nova_live_snapshot.osc.v1.live_image:ListLiveImage',
            'server_live-image_show = '
            'nova_live_snapshot.osc.v1.live_image:ShowLiveImage',
            'server_live-image_delete = '
            'nova_live_snapshot.osc.v1.live_image:DeleteLiveImage',
        ],
    },
)
