"""The OpenStackClient plugin: ``openstack server live-image ...``.

:mod:`.plugin` is what OpenStackClient loads; :mod:`.client` is the one place
that talks to Nova and Glance; :mod:`.v1.live_image` holds one class per
command. Nothing here imports Nova or libvirt, so the plugin works on any
machine that has python-openstackclient.
"""
