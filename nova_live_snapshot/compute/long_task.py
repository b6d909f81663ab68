"""Run work on nova-compute's long-task executor, the one Nova runs builds
and snapshots on, in either Nova this release runs with.

Nova 34 keeps its executors in ``nova.thread_pool_factory`` (its services
run on native threads); Nova 33 has one long-task executor in
``nova.utils``, which its compute manager creates at start (its services
run on eventlet). The self-check (:data:`selfcheck.LONG_TASK_NEEDS`)
accepts either set of names.
"""

try:
    from nova import thread_pool_factory
except ImportError:     # Nova 33
    thread_pool_factory = None
from nova import conf as nova_conf
from nova import utils as nova_utils

__all__ = ['spawn']

CONF = nova_conf.CONF


def spawn(func, *args):
    """Run ``func(*args)`` on the long-task executor; its future."""
    if thread_pool_factory is not None:
        return thread_pool_factory.spawn_on(
            thread_pool_factory.ExecutorType.LONG_TASK, func, *args)
    # The size only matters if the compute manager has not made it yet.
    executor = nova_utils.get_long_task_executor(
        max(1, CONF.max_concurrent_builds))
    return nova_utils.spawn_on(executor, func, *args)
