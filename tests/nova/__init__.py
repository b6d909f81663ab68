import os

# Nova 34's services run on native threads; its test package would patch
# eventlet in unless told not to, and a real libvirt event loop blocks
# eventlet's hub. Must be set before anything imports Nova.
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')
