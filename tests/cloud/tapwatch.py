"""Record what guests send into their taps, from before they exist.

Run in libvirtd's network namespace (``nsenter --net=...``): one
``AF_PACKET`` socket bound to no interface sees every frame on every
interface of the namespace, taps created after it opened included, so a
clone's first frame is seen whenever its tap appears. Frames a guest sends
arrive on the host side of its tap as received (any packet type but
``PACKET_OUTGOING``, which is what the switch sends the guest).

Usage: tapwatch.py OUT READY. Writes one JSON line per frame on a ``tap*``
interface to OUT (interface, source MAC, ethertype, the IPv4 source or the
ARP sender's address and MAC), creates READY once the socket is open and
stops on SIGTERM.
"""

import json
import signal
import socket
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def mac(raw):
    return ':'.join('%02x' % b for b in raw)


def describe(ifname, frame):
    ethertype = int.from_bytes(frame[12:14], 'big')
    record = {'if': ifname, 'src': mac(frame[6:12]),
              'type': '%04x' % ethertype}
    if ethertype == 0x0800 and len(frame) >= 34:
        record['ip'] = socket.inet_ntoa(frame[26:30])
    elif ethertype == 0x0806 and len(frame) >= 42:
        record['arp_mac'] = mac(frame[22:28])
        record['ip'] = socket.inet_ntoa(frame[28:32])
    return record


def main(out_path, ready_path):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(ETH_P_ALL))
    sock.settimeout(0.2)
    with open(out_path, 'w') as out:
        open(ready_path, 'w').close()
        while not stopping:
            try:
                frame, (ifname, _, pkttype, _, _) = sock.recvfrom(65536)
            except TimeoutError:
                continue
            if pkttype == PACKET_OUTGOING or not ifname.startswith('tap'):
                continue
            out.write(json.dumps(describe(ifname, frame)) + '\n')
            out.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
