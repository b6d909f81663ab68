from tests.nova import base  # noqa: F401,I100 (before anything from Nova)

# Lazy-mode templates and placement, through Nova's resource tracker and
# placement fixture: the memory templates hold on tmpfs is reserved in the
# compute node's MEMORY_MB inventory while they exist.

import os
import shutil
import uuid

from nova_live_snapshot import template
from tests.nova.functional import base as functional_base


class TemplateMemoryTest(functional_base.FakeLibvirtTestBase):
    """A host's templates are memory no allocation accounts for."""

    def _reserved(self, rp_uuid):
        return self._get_provider_inventory(rp_uuid)['MEMORY_MB']['reserved']

    def test_template_memory_is_reserved_while_the_template_exists(self):
        """64 MiB of template on the host raise the node's reserved memory
        by what the files hold (allocated blocks, not their size) at the
        next resource update, and removing the template gives it back."""
        self.start_host('compute1')
        rp_uuid = self._get_provider_uuid_by_host('compute1')
        before = self._reserved(rp_uuid)

        path = os.path.join(self.live_conf['template_dir'], str(uuid.uuid4()))
        os.makedirs(path)
        with open(os.path.join(path, template.RAM), 'wb') as f:
            f.write(os.urandom(1 << 20) * 64)
            # A hole where the guest had nothing: not held, not reserved.
            f.truncate(1 << 30)
        held = template.held_mib(self.live_conf['template_dir'])
        self.assertGreaterEqual(held, 64)
        self.assertLess(held, 70)
        self._run_periodics()
        self.assertEqual(before + held, self._reserved(rp_uuid))

        shutil.rmtree(path)
        self._run_periodics()
        self.assertEqual(before, self._reserved(rp_uuid))
