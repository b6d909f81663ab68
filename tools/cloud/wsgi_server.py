"""Serve one OpenStack API with gunicorn, as a production deployment would
serve it with uWSGI or mod_wsgi.

Nova and Neutron parse ``sys.argv`` as their own command line when their
WSGI module is imported, so gunicorn cannot be given the application on its
command line: this launcher configures gunicorn in code and leaves the
application a bare ``sys.argv``. Each service finds its configuration
through its own environment variable (``OS_NOVA_CONFIG_DIR`` and the like),
which the test cloud sets.

Usage: wsgi_server.py NAME MODULE:APP PORT [WORKERS [THREADS]]
"""

import sys

from gunicorn.app import base
from gunicorn import util


class Server(base.BaseApplication):

    def __init__(self, name, app_uri, options):
        self.name = name
        self.app_uri = app_uri
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        sys.argv = [self.name]
        return util.import_app(self.app_uri)


def main(argv):
    name, app_uri, port = argv[:3]
    workers = int(argv[3]) if len(argv) > 3 else 1
    threads = int(argv[4]) if len(argv) > 4 else 4
    Server(name, app_uri, {
        'bind': '127.0.0.1:%d' % int(port),
        'workers': workers,
        'threads': threads,
        'worker_class': 'gthread',
        'proc_name': name,
        # Image uploads of a guest's memory take minutes under load.
        'timeout': 600,
        'graceful_timeout': 10,
        # Clients (keystoneauth sessions in every service) keep connections
        # open between calls; gunicorn's 2 s default closes them under a
        # client that then fails with RemoteDisconnected.
        'keepalive': 120,
        'accesslog': '-',
        'errorlog': '-',
        'control_socket_disable': True,
    }).run()


if __name__ == '__main__':
    main(sys.argv[1:])
