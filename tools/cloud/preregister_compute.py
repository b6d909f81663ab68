"""Register this host's nova-compute service before its first start.

For developers only (``NLS_CLOUD_SHARED_HYPERVISOR=1``): on a machine whose
libvirtd also runs other programs' guests, a nova-compute that registers a
new service refuses to start ("My hypervisor has existing instances, but I
appear to be a new service in this database"), a guard against a compute
pointed at the wrong database. Creating the service record and the local
node identity in advance, as a previous start would have, skips the guard;
nova-compute then ignores the domains it does not know. CI never does this:
its hypervisor runs no other guest when the cloud starts.

Usage: preregister_compute.py NOVA_CONF
"""

import sys

from oslo_utils import uuidutils

from nova import config
from nova import context
from nova import objects
from nova.virt import node


def main(conf_file):
    config.parse_args(['nova-compute', '--config-file', conf_file])
    objects.register_all()
    ctxt = context.get_admin_context()
    objects.Service(ctxt, host=config.CONF.host, binary='nova-compute',
                    topic='compute', report_count=0).create()
    node.write_local_node_uuid(uuidutils.generate_uuid())


if __name__ == '__main__':
    main(sys.argv[1])
