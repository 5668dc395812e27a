"""Publish a _herd._tcp.local. router advert with python-zeroconf, pointing at
ADDRESS:PORT, until stdin closes (prints "published" once registered).

Usage: mdns_publish.py INTERFACE_IP ADDRESS PORT
"""
import socket
import sys
import time

from zeroconf import ServiceInfo, Zeroconf

TYPE = "_herd._tcp.local."


def main():
    ip, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    zc = Zeroconf(interfaces=[ip])
    info = ServiceInfo(
        TYPE,
        "zeroconf-router." + TYPE,
        addresses=[socket.inet_aton(addr)],
        port=port,
        properties={"version": "0.0.0-zeroconf", "protocol": "1", "token": "none",
                    "id": "zeroconf", "started": str(int(time.time() * 1000))},
        server="zeroconf-router.local.",
    )
    zc.register_service(info)
    print("published", flush=True)
    try:
        sys.stdin.read()
    finally:
        zc.unregister_service(info)
        zc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
