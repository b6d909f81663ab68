"""Commands of the ``openstack.live_snapshot.v1`` group."""
