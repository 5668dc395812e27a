"""Browse _herd._tcp.local. with python-zeroconf (an independent mDNS stack)
and print the first resolved router as JSON: {"port": N, "addresses": [...],
"txt": {...}}. Exit 1 when none is found within the timeout.

Usage: mdns_browse.py INTERFACE_IP TIMEOUT_S
"""
import json
import sys
import time

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

TYPE = "_herd._tcp.local."


class Found(ServiceListener):
    def __init__(self):
        self.names = []

    def add_service(self, zc, type_, name):
        self.names.append(name)

    def update_service(self, zc, type_, name):
        self.names.append(name)

    def remove_service(self, zc, type_, name):
        pass


def main():
    ip, timeout = sys.argv[1], float(sys.argv[2])
    zc = Zeroconf(interfaces=[ip])
    try:
        found = Found()
        ServiceBrowser(zc, TYPE, found)
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name in list(found.names):
                info = zc.get_service_info(TYPE, name, timeout=2000)
                if info is None:
                    continue
                txt = {k.decode(): (v.decode() if v is not None else None)
                       for k, v in info.properties.items()}
                print(json.dumps({"name": name, "port": info.port,
                                  "addresses": info.parsed_addresses(), "txt": txt}))
                return 0
            time.sleep(0.2)
        print("no _herd._tcp service found", file=sys.stderr)
        return 1
    finally:
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
