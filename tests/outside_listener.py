"""The test host's listener (tests/outside.py runs it inside its network namespace): every UDP
datagram and TCP connection to HOST:PORT is written to FILE as `<source> <payload>` (TCP lines
end with ` (tcp)`). Usage: outside_listener.py HOST PORT FILE"""

from __future__ import annotations

import socket
import sys
import threading


def main(host: str, port: int, path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - written until the process is killed

    def tcp() -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(8)
        while True:
            conn, peer = server.accept()
            conn.settimeout(2)
            try:
                data = conn.recv(2048)
            except OSError:
                data = b""
            out.write(f"{peer[0]} {data.decode(errors='replace').strip()} (tcp)\n")
            conn.close()

    threading.Thread(target=tcp, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    while True:
        data, peer = udp.recvfrom(2048)
        out.write(f"{peer[0]} {data.decode(errors='replace')}\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
