# Nova imports compute drivers from nova.virt only ([DEFAULT] compute_driver
# = livesnapshot.LiveSnapshotDriver); the driver lives in nova_live_snapshot.
from nova_live_snapshot.virt.driver import LiveSnapshotDriver  # noqa: F401
