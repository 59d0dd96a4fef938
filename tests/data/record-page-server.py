#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Record a conversation with CRIU's page server (see README.md).

usage: record-page-server.py HOST PORT OUT TASK GET... [--close]

Each GET is ADDR:NR_PAGES (hex address).  The GETs go out back to back, as
libpin's client sends them; the rest of a short answer is asked again right
after that answer, at the end of the queue, as libpin does.  With --close a
PS_IOV_CLOSE and its status end the conversation; without, the recording
ends where the server hangs up.  OUT holds one record per message, in the
order they crossed: a byte 'C' (client to server) or 'S', a little-endian
u32 length, the bytes.
"""
import socket
import struct
import sys

PS_IOV_GET = 7
PS_IOV_CLOSE = 0x1023
PAGE = 4096
# struct page_server_iov {u32 cmd; u64 nr_pages, vaddr, dst_id}: 4 bytes of
# padding after cmd on x86-64.
IOV = struct.Struct("<I4xQQQ")


def main():
    host, port, out, task = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    close = "--close" in sys.argv[5:]
    queue = [tuple(int(x, 16) if i == 0 else int(x) for i, x in enumerate(g.split(":")))
             for g in sys.argv[5:] if g != "--close"]
    sk = socket.create_connection((host, port))
    rec = open(out, "wb")

    def record(d, b):
        rec.write(d + struct.pack("<I", len(b)) + b)

    def send(b):
        sk.sendall(b)
        record(b"C", b)

    def recv(n):
        b = b""
        while len(b) < n:
            c = sk.recv(n - len(b))
            if not c:
                return None
            b += c
        return b

    for addr, nr in queue:
        send(IOV.pack(PS_IOV_GET, nr, addr, task))
    i = 0
    while i < len(queue):
        addr, nr = queue[i]
        hdr = recv(IOV.size)
        if hdr is None:
            print(f"server hung up at GET 0x{addr:x} {nr}")
            break
        cmd, got, vaddr, dst = IOV.unpack(hdr)
        data = recv(got * PAGE)
        record(b"S", hdr + data)
        print(f"GET 0x{addr:x} {nr}: cmd 0x{cmd:x} 0x{vaddr:x} {got} pages")
        if got < nr:
            queue.append((addr + got * PAGE, nr - got))
            send(IOV.pack(PS_IOV_GET, nr - got, addr + got * PAGE, task))
        i += 1
    else:
        if close:
            send(IOV.pack(PS_IOV_CLOSE, 0, 0, 0))
            record(b"S", recv(4))
    rec.close()


main()
