"""Nova's libvirt driver, with live snapshots.

Deployed as ``[DEFAULT] compute_driver = livesnapshot.LiveSnapshotDriver``:
Nova imports compute drivers from ``nova.virt`` only, so the wheel carries
a two-line re-export package, ``nova/virt/livesnapshot``.

For ordinary instances nothing changes: every method falls through to
:class:`nova.virt.libvirt.driver.LibvirtDriver`. The subclass adds

* :meth:`LiveSnapshotDriver.live_snapshot`, called by the compute RPC
  endpoint (:mod:`nova_live_snapshot.compute.manager`) it registers in
  :meth:`init_host`;
* in :meth:`spawn`, for an instance built from a live image: the image's
  record is checked first (signature, project, flavor, host), then Nova
  builds the instance exactly as for a boot (disks, ports, its guest
  config), except that the domain is restored from the image's memory
  stream instead of booted (:meth:`_create_guest`), and the clone is then
  re-identified through its guest agent; with ``[live_snapshot]
  restore_mode = lazy`` (experimental) the clone maps the host's template
  of the image copy-on-write instead (``doc/source/lazy.rst``), and
  :meth:`destroy` and :meth:`manage_image_cache` remove templates that
  nothing needs any more;
* the ``CUSTOM_LIVE_SNAPSHOT`` trait on the compute node, which live images
  require, so that clones only land on hosts that can restore them, and the
  ``CUSTOM_LIVE_SNAPSHOT_*`` traits of what this host's QEMU can resume
  (architecture, machine types, QEMU releases, CPU models;
  :mod:`nova_live_snapshot.virt.traits`), of which each live image
  requires those of the host that captured it;
* the memory lazy-mode templates hold on tmpfs (``[live_snapshot]
  template_dir``) reserved in the node's ``MEMORY_MB`` inventory, so that
  the scheduler does not count it as free.
"""

import functools
import threading
import time

from nova import exception as nova_exception
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import utils as libvirt_utils
import os_resource_classes as orc
from oslo_log import log as logging

from nova_live_snapshot import conf as nls_conf
from nova_live_snapshot import domainxml
from nova_live_snapshot import exception
from nova_live_snapshot import ownership
from nova_live_snapshot import protocol
from nova_live_snapshot import selfcheck
from nova_live_snapshot import template
from nova_live_snapshot.virt import disks
from nova_live_snapshot.virt import glance as glance_mod
from nova_live_snapshot.virt import images
from nova_live_snapshot.virt import live
from nova_live_snapshot.virt import traits

LOG = logging.getLogger(__name__)

__all__ = ['LiveSnapshotDriver']


class LiveSnapshotDriver(libvirt_driver.LibvirtDriver):
    """:class:`LibvirtDriver` that captures and restores live images."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only=read_only)
        # nova-compute runs unprivileged: what libvirtd (root) writes for it
        # comes back through Nova's privsep daemon (ownership.take_back).
        ownership.use_privileged_chown(disks.privileged_chown)
        # Before anything else: a Nova without what this driver relies on
        # must stop nova-compute here, not half-way through a capture.
        selfcheck.check_driver(self)
        self._live = None
        self._live_conf = None
        self._compat_traits = None
        # Instance UUID -> RestorePlan while its spawn is restoring, read by
        # _create_guest (called deep inside LibvirtDriver.spawn).
        self._restores = {}
        self._restores_lock = threading.Lock()

    @property
    def live(self):
        """:class:`nova_live_snapshot.virt.live.LiveSnapshots` on this
        compute host: libvirt through Nova's own ``Host`` (``[libvirt]
        connection_uri``), paths from this host's configuration
        (:func:`nova_live_snapshot.conf.for_compute_host`)."""
        if self._live is None:
            # Built from the options as they are now, like the operations.
            self._live_conf = None
            self._live = live.LiveSnapshots(self.live_conf,
                                            self._host.get_connection,
                                            self._image_api)
        return self._live

    @property
    def live_conf(self):
        """This host's ``[live_snapshot]`` values: per-machine defaults
        resolved under its ``state_path`` and ``host``, so that two
        nova-compute services on one machine share no cache, journal,
        staging area or template."""
        if self._live_conf is None:
            self._live_conf = nls_conf.for_compute_host(
                nls_conf.CONF, nls_conf.CONF.state_path, nls_conf.CONF.host)
        return self._live_conf

    # Host --------------------------------------------------------------------

    def init_host(self, host):
        super().init_host(host)
        # Imported here: the endpoint module imports Nova's compute manager,
        # which imports this driver's base module.
        from nova_live_snapshot.compute import manager
        compute = getattr(self.virtapi, '_compute', None)
        if compute is not None:
            # nova-compute builds its RPC server from additional_endpoints
            # after init_host: the endpoint rides the compute topic in a
            # namespace of its own.
            compute.additional_endpoints.append(
                manager.LiveSnapshotEndpoint(host, self))
        self.live.recovery.run(glance_mod.service_context)

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        super().update_provider_tree(provider_tree, nodename,
                                     allocations=allocations)
        provider_tree.add_traits(nodename, protocol.TRAIT)
        self._update_compatibility_traits(provider_tree, nodename)
        self._reserve_template_memory(provider_tree, nodename)

    def _update_compatibility_traits(self, provider_tree, nodename):
        """This host's ``CUSTOM_LIVE_SNAPSHOT_*`` traits; those it no longer
        has (a QEMU upgraded under a restarted nova-compute) go. Without
        them (libvirt would not tell) a host gets no clone of an image that
        requires them, the safe side."""
        if self._compat_traits is None:
            host = self.live.host
            try:
                self._compat_traits = traits.host_traits(
                    'x86_64', host.machine_types(), host.qemu_version(),
                    host.cpu_models(nls_conf.CONF.libvirt.virt_type))
            except exception.LiveSnapshotError as e:
                LOG.warning('No live snapshot compatibility traits for this '
                            'host: %s', e)
                return
        stale = {t for t in provider_tree.data(nodename).traits
                 if t.startswith(traits.PREFIX)} - self._compat_traits
        if stale:
            provider_tree.remove_traits(nodename, *stale)
        provider_tree.add_traits(nodename, *self._compat_traits)

    def _reserve_template_memory(self, provider_tree, nodename):
        """Add what lazy-mode templates hold on tmpfs to the node's reserved
        MEMORY_MB: no instance's allocation covers it, and a template lives
        as long as its image on the host. Runs with every resource update,
        so the reservation follows templates as they come and go."""
        held = template.held_mib(self.live_conf.template_dir)
        if not held:
            return
        inventory = provider_tree.data(nodename).inventory
        memory = inventory.get(orc.MEMORY_MB)
        if memory is None:
            return
        # Placement refuses a reservation above the total.
        memory['reserved'] = min(memory['total'],
                                 memory.get('reserved', 0) + held)
        provider_tree.update_inventory(nodename, inventory)

    def manage_image_cache(self, context, all_instances):
        """Nova's periodic image cache pass ([image_cache]
        manager_interval), extended to the memory stream cache: streams of
        live images deleted from Glance leave the host."""
        super().manage_image_cache(context, all_instances)
        glance = glance_mod.service_adapter(nls_conf.CONF,
                                            self.live_conf.memory_cache_dir)
        if glance is not None:
            exists = functools.partial(glance_mod.image_exists, glance)
            self.live.cache.prune(exists)
            # A live image deleted with a plain `openstack image delete`
            # leaves its hidden memory image (a machine's RAM): it goes.
            glance_mod.sweep_orphaned_memory(glance, exists)
        # Lazy-mode templates of streams no longer cached go too, once no
        # clone maps them.
        self._collect_templates()

    # Capture -----------------------------------------------------------------

    def live_snapshot(self, context, instance, image_id, update_task_state):
        """Capture running ``instance`` into the queued Glance image
        ``image_id`` (its disk) and a hidden memory image it points to.

        Same contract as :meth:`snapshot`: ``update_task_state`` moves the
        instance through image_pending_upload and image_uploading.

        :raises InstanceNotRunning: the instance is not running.
        :raises nova_live_snapshot.exception.LiveSnapshotError: the capture
            failed; the instance keeps running on its own disk.
        """
        guest = self._host.get_guest(instance)
        if not guest.is_active():
            raise nova_exception.InstanceNotRunning(instance_id=instance.uuid)
        return self.live.captures.capture(context, instance, guest.name,
                                          image_id, update_task_state)

    # Spawn -------------------------------------------------------------------

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        if not images.is_live_image(instance):
            return super().spawn(
                context, instance, image_meta, injected_files,
                admin_password, allocations, network_info=network_info,
                block_device_info=block_device_info, power_on=power_on,
                accel_info=accel_info)
        try:
            # Checked before anything exists for the instance.
            plan = self.live.restores.prepare(context, instance)
            with self.live.restores.memory_stream(context, plan):
                with self._restores_lock:
                    self._restores[instance.uuid] = plan
                try:
                    super().spawn(
                        context, instance, image_meta, injected_files,
                        admin_password, allocations,
                        network_info=network_info,
                        block_device_info=block_device_info, power_on=True,
                        accel_info=accel_info)
                finally:
                    with self._restores_lock:
                        self._restores.pop(instance.uuid, None)
            resumed_at = time.monotonic()
            guest = self._host.get_guest(instance)
            report = self.live.restores.reidentify(plan, guest.name)
        except exception.LiveSnapshotError as e:
            # Not worth a reschedule (another host would refuse the same
            # image), and the fault says why. Nova destroys what was built.
            raise nova_exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=str(e)) from e
        self._forget_live_image(instance)
        LOG.info('Clone of live image %s re-identified: %s',
                 plan.record.disk_image,
                 ', '.join('%s %s' % (s['step'], s['status'])
                           for s in report['steps']), instance=instance)
        # Where a clone's time goes, for operators and the benchmarks: the
        # restore, the wait for Neutron's network-vif-plugged (the clone
        # waits paused, as a booting guest does) and each re-identification
        # step, the DHCP lease within the network step.
        LOG.info('Clone timings: restore %.2f s, port wiring and resume '
                 '%.2f s, re-identification %.2f s (%s; DHCP lease %s s)',
                 plan.restore_s or 0.0,
                 resumed_at - (plan.restored_at or resumed_at),
                 time.monotonic() - resumed_at,
                 ', '.join('%s %.2f s' % (s['step'], s['seconds'])
                           for s in report['steps']
                           if s['seconds'] is not None),
                 report.get('facts', {}).get('dhcp_wait_s', '-'),
                 instance=instance)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        super().destroy(context, instance, network_info,
                        block_device_info=block_device_info,
                        destroy_disks=destroy_disks,
                        destroy_secrets=destroy_secrets)
        # A lazy clone gone may have been its template's last user.
        self._collect_templates()

    def _collect_templates(self):
        try:
            removed = self.live.collect_templates()
        except (exception.LiveSnapshotError, OSError):
            # The next destroy or cache run tries again; a delete must not
            # fail on it.
            LOG.exception('Could not collect lazy-mode templates')
            return
        for image in removed:
            LOG.info('Removed the lazy-mode template of live image %s', image)

    @staticmethod
    def _forget_live_image(instance):
        """Drop the live image's record from the clone's copy of its image
        properties. Nova copies those into every snapshot of the instance
        and reads them back on rebuild, evacuate and unshelve: the clone is
        an ordinary instance from now on, whose snapshots are ordinary
        images and whose next spawn is a boot."""
        sysmeta = instance.system_metadata
        prefixes = ('image_' + protocol.PREFIX,
                    'image_trait:%s' % protocol.TRAIT)
        stale = [key for key in sysmeta if key.startswith(prefixes)]
        if stale:
            for key in stale:
                del sysmeta[key]
            instance.save()

    def _create_guest(self, context, xml, instance, power_on=True,
                      pause=False, post_xml_callback=None):
        with self._restores_lock:
            plan = self._restores.get(instance.uuid)
        if plan is None:
            # Every guest on this host may be captured one day: give it the
            # VM generation ID device its clones will need (a device cannot
            # be added to a saved machine). Nova's XML has none.
            xml = disks.protect(domainxml.ensure_genid(xml))
            return super()._create_guest(
                context, xml, instance, power_on=power_on, pause=pause,
                post_xml_callback=post_xml_callback)
        # Nova pauses a new guest until Neutron reports its ports plugged,
        # then resumes it: a clone waits paused the same way.
        started = time.monotonic()
        try:
            self.live.restores.restore(
                plan, xml, libvirt_utils.get_instance_path(instance),
                paused=pause, after_define=post_xml_callback)
            plan.restored_at = time.monotonic()
            plan.restore_s = plan.restored_at - started
        except Exception:
            # Nova logs only that the guest did not start.
            LOG.exception('Restoring the clone of live image %s failed',
                          plan.record.disk_image, instance=instance)
            raise
        return self._host.get_guest(instance)
