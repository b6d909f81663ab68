"""Does the installed Nova have what this extension relies on?

The extension lives inside Nova's processes and leans on names Nova does not
promise to keep: a driver subclass overriding private methods, the compute
manager's ``additional_endpoints``, a paste filter calling into Nova's API
internals. A Nova release that renamed one of them would not fail at start:
it would fail later, half-way through a capture or a spawn, or leave
nova-compute running without the RPC endpoint the API casts to. So the
driver (when nova-compute loads it) and the API filter (when nova-api loads
its pipeline) check first that

* the Nova version is one this release was tested with (:data:`TESTED_NOVA`),
* every Nova name they use is there, callables with the parameters they are
  passed (:data:`DRIVER_NEEDS`, :data:`API_NEEDS`),

and raise :class:`~nova_live_snapshot.exception.NovaIncompatible` naming
everything missing, so that the service does not start rather than run
half-enabled.

``tests/unit/test_selfcheck.py`` walks the package's source for every
``nova.*`` name it imports or touches and fails when one is not listed here.
"""

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect

from packaging import specifiers
from packaging import version as pkg_version

from nova_live_snapshot import exception

__all__ = ['TESTED_NOVA', 'Need', 'DRIVER_NEEDS', 'LONG_TASK_NEEDS',
           'API_NEEDS', 'check_driver', 'check_api', 'missing',
           'nova_version']

#: The Nova releases this release was tested with (requirements.txt): Nova
#: 34 by every suite, Nova 33 (2026.1) by the functional suite
#: (make nova33-functional).
TESTED_NOVA = specifiers.SpecifierSet('>=33.0.0,<35.0.0')


@dataclasses.dataclass(frozen=True)
class Need:
    """A Nova name the extension uses: ``attribute`` (dotted, may be empty
    for the module itself) of module ``module``, which when called is passed
    ``parameters`` by name; ``why`` says what breaks without it."""

    module: str
    attribute: str
    why: str
    parameters: tuple = ()

    @property
    def name(self):
        return '.'.join(p for p in (self.module, self.attribute) if p)


def _needs(why, module, *attributes):
    """Needs of ``module``: each attribute ``'Name'`` or ``'Name(a, b)'``
    (a callable passed parameters a and b by name)."""
    out = []
    for spec in attributes:
        name, _, params = spec.partition('(')
        params = tuple(p.strip() for p in params.rstrip(')').split(',')
                       if p.strip())
        out.append(Need(module, name, why, params))
    return tuple(out)


_E = 'nova.exception'

#: What nova-compute's side (the driver, its RPC endpoint and client) uses.
DRIVER_NEEDS = (
    # The virt shim: Nova imports compute drivers from nova.virt only.
    Need('nova.virt.livesnapshot', 'LiveSnapshotDriver',
         'compute_driver = livesnapshot.LiveSnapshotDriver loads the driver '
         'through this re-export (a regular, not editable, install)'),
    # The base class and the methods the subclass overrides or calls, with
    # the parameters it passes.
    *_needs(
        'the driver subclasses LibvirtDriver and overrides these',
        'nova.virt.libvirt.driver',
        'LibvirtDriver(virtapi, read_only)',
        'LibvirtDriver.init_host(host)',
        'LibvirtDriver.update_provider_tree(provider_tree, nodename, '
        'allocations)',
        'LibvirtDriver.manage_image_cache(context, all_instances)',
        'LibvirtDriver.spawn(context, instance, image_meta, injected_files, '
        'admin_password, allocations, network_info, block_device_info, '
        'power_on, accel_info)',
        'LibvirtDriver.destroy(context, instance, network_info, '
        'block_device_info, destroy_disks, destroy_secrets)',
        'LibvirtDriver._create_guest(context, xml, instance, power_on, '
        'pause, post_xml_callback)'),
    *_needs('a clone is restored into the instance directory Nova made',
            'nova.virt.libvirt.utils', 'get_instance_path(instance)'),
    *_needs('a base file libvirt gave to the QEMU user is taken back through '
            'Nova\'s sys_admin privsep context (virt/disks.py)',
            'nova.privsep.path', 'chown(path, uid, gid)'),
    # The compute manager's extra endpoints: nova-compute builds its RPC
    # server from them after init_host.
    *_needs('the driver registers its RPC endpoint through the compute '
            'manager it is loaded by', 'nova.compute.manager',
            'ComputeVirtAPI', 'ComputeManager'),
    Need('nova.service', 'Service.start',
         'nova-compute serves the RPC endpoints in additional_endpoints'),
    *_needs('the RPC endpoint follows Nova\'s snapshot_instance',
            'nova.compute.utils',
            'EventReporter(context, event_name, host)',
            'notify_about_instance_usage(notifier, context, instance, '
            'event_suffix)',
            'notify_about_instance_snapshot(context, instance, host, phase, '
            'snapshot_image_id)',
            'notify_about_instance_action(context, instance, host, action, '
            'phase, exception)',
            'add_instance_fault_from_exc(context, instance, fault, exc_info)',
            'delete_image(context, instance, image_api, image_id, '
            'log_exc_info)'),
    *_needs('a capture moves the instance through Nova\'s image task states',
            'nova.compute.task_states', 'IMAGE_SNAPSHOT_PENDING',
            'IMAGE_SNAPSHOT', 'IMAGE_PENDING_UPLOAD', 'IMAGE_UPLOADING'),
    *_needs('the capture\'s notifications', 'nova.objects.fields',
            'NotificationPhase.START', 'NotificationPhase.END',
            'NotificationPhase.ERROR', 'NotificationAction.SNAPSHOT'),
    *_needs('the RPC client casts on the compute topic', 'nova.rpc',
            'get_client', 'get_notifier(service, host)'),
    Need('nova.compute.rpcapi', 'RPC_TOPIC', 'the RPC client\'s topic'),
    Need('nova.objects.base', 'NovaObjectSerializer',
         'instances travel over RPC as Nova objects'),
    Need('nova.conf', 'CONF.max_concurrent_snapshots',
         'Nova\'s limit on concurrent snapshots bounds captures too'),
    Need('nova.context', 'get_admin_context',
         'a capture interrupted by a restart is recovered as Nova\'s '
         'service user, not with a stored token'),
    Need('nova.service_auth', 'get_service_auth_plugin',
         'recovery authenticates as Nova\'s [service_user]'),
    Need('nova.conf.service_token', 'SERVICE_USER_GROUP',
         'recovery authenticates as Nova\'s [service_user]'),
    Need('nova.utils', 'get_ksa_adapter',
         'the image cache pass asks Glance as Nova\'s service user'),
    *_needs('errors the driver and its endpoint catch or raise', _E,
            'InstanceNotFound', 'InstanceNotRunning',
            'UnexpectedDeletingTaskStateError', 'BuildAbortException',
            'ImageNotFound', 'ImageNotAuthorized'),
)

#: nova-compute's long-task executor, where captures run
#: (compute/long_task.py): either set of names will do, Nova 34's first.
LONG_TASK_NEEDS = (
    _needs('captures run on nova-compute\'s long-task executor',
           'nova.thread_pool_factory', 'spawn_on', 'ExecutorType.LONG_TASK'),
    _needs('captures run on nova-compute\'s long-task executor (Nova 33)',
           'nova.utils', 'spawn_on(executor, func)',
           'get_long_task_executor(max_workers)'),
)

#: What nova-api's side (the paste filter, its schema and policy) uses.
API_NEEDS = (
    *_needs('the filter answers as Nova\'s API does',
            'nova.api.openstack.wsgi', 'Request.set_api_version_request',
            'Fault', 'API_VERSION_REQUEST_HEADER',
            'LEGACY_API_VERSION_REQUEST_HEADER'),
    *_needs('the filter validates the body with Nova\'s validator',
            'nova.api.validation.validators', '_SchemaValidator.validate'),
    Need('nova.api.validation.parameter_types', 'name',
         'the image name follows Nova\'s createImage rules'),
    *_needs('the filter does what Nova\'s createImage does',
            'nova.compute.api', 'API.get(context, instance_id, '
            'expected_attrs)'),
    *_needs('the filter does what Nova\'s createImage does',
            'nova.compute.utils',
            'initialize_instance_snapshot_metadata(context, instance, name, '
            'extra_properties)',
            'is_volume_backed_instance(context, instance)',
            'delete_image(context, instance, image_api, image_id)'),
    *_needs('the filter refuses servers that are not ACTIVE and idle',
            'nova.compute.task_states', 'IMAGE_SNAPSHOT_PENDING'),
    Need('nova.compute.vm_states', 'ACTIVE', 'only ACTIVE servers'),
    Need('nova.image.glance', 'API', 'the queued image is made in Glance'),
    *_needs('the filter records the instance action',
            'nova.objects.instance_action',
            'InstanceAction.action_start(context, instance_uuid, '
            'action_name, want_result)'),
    *_needs('the filter checks the host runs the driver',
            'nova.objects.compute_node',
            'ComputeNode.get_by_host_and_nodename(context, host, nodename)'),
    *_needs('the filter checks the host runs the driver',
            'nova.scheduler.client.report', 'report_client_singleton',
            'SchedulerReportClient.get_provider_traits(context, rp_uuid)'),
    *_needs('the policy rule is registered in Nova\'s enforcer',
            'nova.policy', 'init', '_ENFORCER'),
    Need('nova.policies.base', 'PROJECT_MEMBER_OR_ADMIN',
         'the policy rule\'s default'),
    Need('nova.objects', 'register_all', 'Nova\'s objects'),
    *_needs('the filter casts on the compute topic', 'nova.rpc',
            'get_client'),
    Need('nova.compute.rpcapi', 'RPC_TOPIC', 'the RPC client\'s topic'),
    Need('nova.objects.base', 'NovaObjectSerializer',
         'instances travel over RPC as Nova objects'),
    *_needs('errors the filter maps to HTTP answers', _E,
            'InstanceNotFound', 'PolicyNotAuthorized', 'ValidationError',
            'InstanceInvalidState', 'UnexpectedTaskStateError',
            'InvalidAPIVersionString', 'InvalidGlobalAPIVersion'),
)


def nova_version():
    """The installed Nova's version string, or None when Nova's
    distribution metadata is missing."""
    try:
        return importlib.metadata.version('nova')
    except importlib.metadata.PackageNotFoundError:
        return None


def _resolve(need):
    """The object ``need`` names, or a reason it is not usable."""
    try:
        obj = importlib.import_module(need.module)
    except ImportError as e:
        return None, 'cannot import %s (%s)' % (need.module, e)
    for part in need.attribute.split('.') if need.attribute else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return None, '%s is missing' % need.name
    return obj, None


def _parameter_problem(need, obj):
    if not need.parameters:
        return None
    try:
        accepted = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return '%s is not callable' % need.name
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return None
    lacking = [p for p in need.parameters if p not in accepted]
    if lacking:
        return '%s takes no parameter %s' % (need.name, ', '.join(lacking))
    return None


def missing(needs):
    """What of ``needs`` the installed Nova lacks: one sentence each (a
    module that cannot be imported is named once)."""
    problems = []
    for need in needs:
        obj, problem = _resolve(need)
        problem = problem or _parameter_problem(need, obj)
        if problem:
            sentence = '%s: %s' % (problem, need.why)
            if sentence not in problems:
                problems.append(sentence)
    return problems


def _first_complete(alternatives):
    """Nothing when one of ``alternatives`` (tuples of needs) is all
    there, else what the first one lacks."""
    problems = [missing(needs) for needs in alternatives]
    if any(not p for p in problems):
        return []
    return problems[0]


def _version_problem():
    found = nova_version()
    if found is None:
        return 'no Nova distribution is installed (no package metadata)'
    try:
        parsed = pkg_version.Version(found)
    except pkg_version.InvalidVersion:
        return 'Nova reports an unparsable version %r' % found
    if not TESTED_NOVA.contains(parsed, prereleases=True):
        return 'Nova %s is not a release this one was tested with' % found
    return None


def _raise_if(service, problems):
    if problems:
        raise exception.NovaIncompatible(
            service=service, nova=nova_version() or 'unknown',
            tested=str(TESTED_NOVA), missing='; '.join(problems))


def _service_start_problem():
    """nova-compute builds its RPC server from the manager's
    ``additional_endpoints`` in ``Service.start``: without that, the driver
    would run with no endpoint for the API's casts."""
    from nova import service
    if 'additional_endpoints' not in service.Service.start.__code__.co_names:
        return ('nova.service.Service.start no longer serves the compute '
                'manager\'s additional_endpoints: the live snapshot RPC '
                'endpoint would never be reachable')
    return None


def check_driver(driver):
    """Check Nova for the driver, once its base class is initialised.

    :param driver: the :class:`LiveSnapshotDriver` being built (its
        ``virtapi``, ``_host`` and ``_image_api`` are looked at).
    :raises NovaIncompatible: naming every problem found.
    """
    problems = list(_driver_problems())
    if not problems:
        problems += _driver_instance_problems(driver)
    _raise_if('nova-compute (compute_driver = livesnapshot.'
              'LiveSnapshotDriver)', problems)


@functools.cache
def _driver_problems():
    """What the installed Nova lacks for the driver, looked up once per
    process: the Nova a service runs does not change under it, and the
    lookups walk ``sys.path`` (Nova's own unit tests, which build drivers
    by the thousand, count ``os.stat`` calls)."""
    problems = [p for p in [_version_problem()] if p]
    problems += missing(DRIVER_NEEDS)
    problems += _first_complete(LONG_TASK_NEEDS)
    if not problems:
        problems += [p for p in [_service_start_problem()] if p]
    return tuple(problems)


def _driver_instance_problems(driver):
    """Attributes LibvirtDriver sets in ``__init__`` that the subclass uses,
    and the compute manager's endpoint list."""
    from nova.compute import manager as compute_manager
    problems = []
    for attr, methods in (('_host', ('get_connection', 'get_guest')),
                          ('_image_api', ('get', 'create', 'update',
                                          'delete', 'download'))):
        obj = getattr(driver, attr, None)
        lacking = [m for m in methods if not callable(getattr(obj, m, None))]
        if obj is None or lacking:
            problems.append('LibvirtDriver.%s (%s) is missing: the driver '
                            'reaches libvirt and Glance through it'
                            % (attr, ', '.join(lacking or methods)))
    # Only nova-compute's own virt API carries the manager; Nova's unit
    # tests load drivers with fakes of their own.
    if isinstance(driver.virtapi, compute_manager.ComputeVirtAPI):
        compute = getattr(driver.virtapi, '_compute', None)
        endpoints = getattr(compute, 'additional_endpoints', None)
        # What the driver does with it (Nova's unit tests pass mocks).
        if not callable(getattr(endpoints, 'append', None)):
            problems.append('nova.compute.manager.ComputeVirtAPI._compute.'
                            'additional_endpoints is missing: the driver '
                            'cannot register its RPC endpoint')
    return problems


def check_api():
    """Check Nova for the API filter.

    :raises NovaIncompatible: naming every problem found.
    """
    problems = [p for p in [_version_problem()] if p]
    problems += missing(API_NEEDS)
    _raise_if('nova-api (the live_snapshot paste filter)', problems)
