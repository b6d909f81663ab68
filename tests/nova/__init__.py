import importlib.metadata
import os

# Nova 34's services run on native threads; its test package would patch
# eventlet in unless told not to, and a real libvirt event loop blocks
# eventlet's hub. Must be set before anything imports Nova. Nova 33's
# services and test fixtures still run on eventlet (its notification
# fixture follows greenlet parents to the test case), so there it stays on.
if int(importlib.metadata.version('nova').split('.')[0]) >= 34:
    os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')
