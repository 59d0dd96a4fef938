#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora of the fuzz targets (tests/fuzz-<name>.c) into
tests/fuzz/<name>/: small valid inputs and near-valid ones, each named for
what it is.  The CRIU seeds are bytes of the dumps in ../shared/criu-images
(test data, see its README).  Run from the source root; the output is
committed, so a run only needs repeating when a target's input changes.
"""
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, 'tests', 'fuzz')
CRIU = os.path.join(ROOT, '..', 'shared', 'criu-images')
PAGE = os.sysconf('SC_PAGESIZE')


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# ---- protobuf wire format (proto/uffdd.proto) -----------------------------

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(v):
    return (v << 1) ^ (v >> 63)


def f_int(field, v):
    return varint(field << 3) + varint(v)


def f_msg(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def rng(addr, length):
    return f_int(1, addr) + f_int(2, length)


BASE = 0x7f0000000000
R = rng(BASE, 16 * PAGE)

# Msg body field numbers.
HELLO, UFFD, REGION_ADD, REGION_REMOVE, PREFETCH, WAIT, DIRTY_GET = 10, 11, 12, 13, 14, 15, 16
PIN_REPORT, PIN_RELEASE, STATS_GET, LIST_GET, GOODBYE = 17, 18, 19, 20, 21
WORKING_SET_GET, REPLAY, REPLY, STALE = 22, 23, 30, 31
# Control byte of fuzz-proto: bit 7 through the socket, bits 0-2 the fd count.
VIA_SOCKET = 0x80


def proto_seeds():
    seeds = {
        'hello': (0, f_msg(HELLO, f_int(1, 1) + f_msg(2, b'seed'))),
        'uffd': (1, f_msg(UFFD, f_int(1, 0x1ff) + f_int(2, 1))),
        'uffd-socket': (VIA_SOCKET | 1, f_msg(UFFD, f_int(1, 0x1ff))),
        'region-add-fd': (1, f_msg(REGION_ADD, f_msg(1, R) + f_int(2, 1) + f_int(3, 1) +
                                   f_int(4, PAGE) + f_int(5, 0) + f_int(6, 1))),
        'region-add-zero-socket': (VIA_SOCKET, f_msg(REGION_ADD, f_msg(1, R) + f_int(2, 3) +
                                                     f_int(3, 0))),
        'region-remove': (0, f_msg(REGION_REMOVE, f_msg(1, R))),
        'prefetch': (0, f_msg(PREFETCH, f_msg(1, R))),
        'wait': (0, f_msg(WAIT, f_msg(1, R) + f_int(2, 100))),
        'dirty-get': (0, f_msg(DIRTY_GET, f_msg(1, R) + f_int(2, 1))),
        'pin-report': (0, f_msg(PIN_REPORT, f_msg(1, R) + f_int(2, 7))),
        'pin-release': (0, f_msg(PIN_RELEASE, f_int(1, 7))),
        'stats-get': (0, f_msg(STATS_GET, f_int(1, 3) + f_int(2, 1))),
        'list-get': (0, f_msg(LIST_GET, f_int(1, 1) + f_int(2, 0))),
        'goodbye': (0, f_msg(GOODBYE, b'')),
        'working-set-get': (0, f_msg(WORKING_SET_GET, f_int(1, 2))),
        'replay': (0, f_msg(REPLAY, f_msg(1, R) + f_msg(1, rng(BASE + 32 * PAGE, PAGE)))),
        'reply': (VIA_SOCKET, f_msg(REPLY, f_int(1, zigzag(-22)) + f_msg(2, b'bad range') +
                                    f_msg(5, b'\x0f') +
                                    f_msg(6, f_int(1, 5) + f_int(9, 1) + f_int(9, 2)) +
                                    f_msg(10, R) + f_int(11, 16))),
        'stale': (0, f_msg(STALE, f_int(1, 7) + f_msg(2, R) + f_int(3, 1))),
        # Near-valid: each breaks one rule of pin_proto_decode().
        'bad-unaligned-range': (0, f_msg(PREFETCH, f_msg(1, rng(BASE + 1, PAGE)))),
        'bad-wrapping-range': (0, f_msg(PREFETCH, f_msg(1, rng(2**64 - PAGE, 2 * PAGE)))),
        'bad-fd-count': (2, f_msg(UFFD, f_int(1, 0x1ff))),
        'bad-field-zero': (0, f_int(0, 1) + f_msg(GOODBYE, b'')),
        'bad-truncated': (0, f_msg(HELLO, f_int(1, 1) + f_msg(2, b'seed'))[:-2]),
    }
    for name, (control, body) in seeds.items():
        write('proto', name, bytes([control]) + f_int(1, 1) + body)


# ---- CRIU images (fuzz-criu.c) --------------------------------------------

IMG_COMMON_MAGIC = 0x54564319
PAGES_SIZE_MAGIC = 0  # fuzz-criu.c's own: the pages file's size follows


def criu(dump, name):
    with open(os.path.join(CRIU, dump, name), 'rb') as f:
        return f.read()


def pages_size(size):
    return struct.pack('<IIQ', IMG_COMMON_MAGIC, PAGES_SIZE_MAGIC, size)


def criu_seeds():
    pm, mm, ps = (criu('fixture', n) for n in ('pagemap-25997.img', 'mm-25997.img',
                                              'pstree.img'))
    fork_pm, fork_mm = criu('fixture-fork', 'pagemap-27448.img'), criu('fixture-fork',
                                                                      'mm-27448.img')
    write('criu', 'pagemap.img', pm)
    write('criu', 'mm.img', mm)
    write('criu', 'pstree.img', ps)
    write('criu', 'pstree-fork.img', criu('fixture-fork', 'pstree.img'))
    write('criu', 'dump', pm + mm + ps)
    write('criu', 'dump-fork-child', fork_pm + fork_mm)
    # The pagemap's head alone: every VMA is zero pages (found by fuzz-criu:
    # build() computed NULL + 0 for the entries).
    head_len = struct.unpack_from('<I', pm, 8)[0]
    write('criu', 'pagemap-no-entries', pm[:12 + head_len] + mm)
    # Near-valid.  pages-1.img of the fixture is 1184 pages.
    write('criu', 'bad-pages-short', pm + mm + pages_size(1184 * PAGE - PAGE))
    write('criu', 'bad-pagemap-truncated', pm[:-3] + mm)
    write('criu', 'bad-mm-truncated', pm + mm[:len(mm) // 2])
    write('criu', 'bad-no-mm', pm)
    write('criu', 'bad-second-mm', pm + mm + mm[8:])
    # An entry of 2^50 pages: more than any pages file holds.
    huge = f_int(1, 0x7e0000000000) + f_int(2, 0) + f_int(4, 4) + f_int(5, 1 << 50)
    write('criu', 'bad-pagemap-huge', pm[:12 + head_len] + struct.pack('<I', len(huge)) + huge + mm)
    chain_seeds(pm, mm, ps, head_len)


PARENT_LOOP_MAGIC = 1  # fuzz-criu.c's own: the oldest dump's parent link makes a cycle
PE_PARENT = 1


def fields(msg):
    """The varint fields of a protobuf message: {number: value}."""
    out, i = {}, 0
    while i < len(msg):
        tag, i = msg[i], i + 1
        v = shift = 0
        while True:
            b, i = msg[i], i + 1
            v |= (b & 0x7f) << shift
            shift += 7
            if not b & 0x80:
                break
        out[tag >> 3] = v
    return out


def entries(pm, head_len):
    """The PagemapEntry messages of pagemap image pm."""
    out, i = [], 12 + head_len
    while i < len(pm):
        n = struct.unpack_from('<I', pm, i)[0]
        out.append(pm[i + 4:i + 4 + n])
        i += 4 + n
    return out


def with_len(msg):
    return struct.pack('<I', len(msg)) + msg


def child_pagemap(pm, head_len, parity, old=False):
    """pm's entries, those of index % 2 == parity left to the parent dump as
    CRIU writes them (PE_PARENT, no pages); old: with in_parent instead of
    flags, as CRIU before flags did."""
    out = pm[:12 + head_len]
    for k, e in enumerate(entries(pm, head_len)):
        if k % 2 != parity:
            out += with_len(e)
            continue
        f = fields(e)
        tail = f_int(3, 1) if old else f_int(4, PE_PARENT) + f_int(5, f[5])
        out += with_len(f_int(1, f[1]) + f_int(2, f[5] if old else 0) + tail)
    return out


def chain_seeds(pm, mm, ps, head_len):
    """Pre-dump chains: the first pagemap is the dump's, the next its
    parent's, the one after the parent's parent (fuzz-criu.c)."""
    child, child2 = child_pagemap(pm, head_len, 0), child_pagemap(pm, head_len, 1)
    write('criu', 'chain-two', child + pm + mm + ps)
    write('criu', 'chain-three', child + child2 + pm + mm)
    write('criu', 'chain-in-parent-field', child_pagemap(pm, head_len, 0, True) + pm + mm)
    loop = struct.pack('<II', IMG_COMMON_MAGIC, PARENT_LOOP_MAGIC)
    write('criu', 'bad-chain-cycle', child + child2 + loop + mm)
    write('criu', 'bad-chain-no-parent', child + mm)
    write('criu', 'bad-chain-parent-empty', child + pm[:12 + head_len] + mm)


# ---- our image's manifest (fuzz-image.c) ----------------------------------

DATA, HOLE = b'\x01', b'\x00'


def manifest(lines, layout):
    text = 'uffdd-image 1\npage-size %d\n' % PAGE + ''.join(l + '\n' for l in lines)
    return text.encode() + b'\0' + layout


def region(addr, npages, prot, flags, off_pages, name=''):
    return 'region 0x%x 0x%x %s 0x%x 0x%x%s' % (addr, npages * PAGE, prot, flags,
                                                off_pages * PAGE, ' ' + name if name else '')


def image_seeds():
    two = [region(BASE, 4, 'rw-', 0x22, 0), region(BASE + 8 * PAGE, 2, 'r-x', 0x2, 4, '[heap]')]
    write('image', 'two-regions', manifest(two + ['end 2'], DATA * 2 + HOLE * 2 + DATA + HOLE))
    write('image', 'holes-only', manifest([region(BASE, 3, 'r--', 0x22, 0), 'end 1'], HOLE * 3))
    write('image', 'empty', manifest(['end 0'], b''))
    # Near-valid.
    write('image', 'bad-no-end', manifest(two, DATA * 6))
    write('image', 'bad-end-count', manifest(two + ['end 3'], DATA * 6))
    write('image', 'bad-past-pages', manifest(two + ['end 2'], DATA * 5))
    write('image', 'bad-overlap', manifest([region(BASE, 4, 'rw-', 0x22, 0),
                                           region(BASE + PAGE, 1, 'rw-', 0x22, 0), 'end 2'],
                                          DATA * 4))
    write('image', 'bad-unaligned', manifest(['region 0x%x 0x%x rw- 0x22 0x0' % (BASE + 1, PAGE),
                                              'end 1'], DATA))
    write('image', 'bad-prot', manifest([region(BASE, 1, 'rwz', 0x22, 0), 'end 1'], DATA))


# ---- fuzz-list (tests/fuzz-list.c): ListGet walks over its base table ----

CLIENTS, REGIONS, PINS = 0, 1, 2
START, ROOT, BIG, FILTER, INSPECT, OTHER_UID = 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
# Base sessions of fuzz-list-table.c by index: 5-7 and 517-519 hold 8192
# regions and pins (uids 1000, 0, 1001; the second three of the largest
# values); the caller's session is 1024, the input's come after.
HUGE, HUGE_ROOT, HUGE_BIG = 5, 6, 517
# Change kinds (one byte: the kind, bit 6 near the cursor's key).
ADD_SESSION, DEL_SESSION, ADD_REGION, DEL_REGION, ADD_PIN, DEL_PIN = range(6)
NEAR = 0x40
HERE = 0  # a change's session: the cursor's (a step of 0)
STEP_NEXT = 0x8001  # an entry's index: the one after the cursor's key


def le(v, n):
    return (v % (1 << (8 * n))).to_bytes(n, 'little')


def small(limit):
    return bytes([limit - 1])


AROUND = {'server': 0, 'max-1': 1, 'max': 2, 'max+1': 3, 'u32': 10}


def around(name):
    return bytes([0xff, AROUND[name]])


def session(uid, nregions, first, stride, npins, cookie, cstride):
    return (bytes([{1000: 0, 1001: 1, 0: 2}[uid], nregions]) + le(first, 2) +
            bytes([stride - 1, npins]) + le(cookie, 8) + bytes([cstride - 1]))


def change(kind, target=HERE, *args):
    return bytes([kind]) + le(target, 2) + b''.join(args)


def walk(flags, limit, pages, sessions=(), setup=(), filter_=None, start=None, changes=()):
    out = bytes([flags]) + limit + bytes([pages - 1, len(sessions)]) + b''.join(sessions)
    out += bytes([len(setup)]) + b''.join(setup)
    if filter_ is not None:
        out += le(filter_, 2)
    if start is not None:
        out += start
    return out + b''.join(changes)


def list_seeds():
    mixed = [session(1000, 5, 0x10, 3, 4, 1 << 40, 2), session(0, 16, 0x100, 1, 16, 7, 1),
             session(1001, 2, 0x10, 1, 3, 9, 5)]
    near_pins = [change(ADD_PIN | NEAR, HERE, b'\xff'),
                 change(DEL_PIN | NEAR, HERE, le(STEP_NEXT, 2)),
                 change(ADD_PIN | NEAR, HERE, b'\x01'), change(DEL_SESSION, 0x8000 | 1023)] * 4
    near_regions = [change(ADD_REGION | NEAR, HERE, b'\xff'),
                    change(DEL_REGION | NEAR, HERE, le(STEP_NEXT, 2)),
                    change(DEL_SESSION, 1), change(ADD_SESSION)] * 4
    seeds = {
        'clients-full-pages': walk(CLIENTS | ROOT, around('server'), 4),
        'clients-small-changing': walk(CLIENTS, small(3), 16, mixed, [change(DEL_SESSION, 0x8000)],
                                       changes=[change(ADD_SESSION), change(DEL_SESSION, 1),
                                                change(DEL_SESSION, 0xff)] * 5),
        'clients-inspect-caller': walk(CLIENTS | INSPECT | OTHER_UID, small(7), 16,
                                       changes=[change(ADD_SESSION + 6)] * 15),
        'pins-filter-other-uid': walk(PINS | FILTER, small(16), 16, filter_=HUGE_ROOT),
        'pins-full-pages': walk(PINS | START | ROOT, around('max'), 4,
                                start=le(HUGE, 2) + b'\x40'),
        'pins-small-changing': walk(PINS | START, small(4), 16, mixed,
                                    start=le(HUGE, 2) + b'\x42' + le(100, 2), changes=near_pins),
        # The input's sessions take the last ids, up to 2^64-1.
        'pins-last-ids': walk(PINS | ROOT | BIG | START, small(3), 16,
                              [session(0, 0, 0, 1, 2, 1 << 62, 1)] * 31,
                              start=le(1050, 2) + b'\x40', changes=[change(ADD_SESSION)] * 15),
        'regions-filter': walk(REGIONS | FILTER, small(16), 16, filter_=HUGE,
                               changes=[change(DEL_REGION, 0x8000 | HUGE, le(7, 2))] * 15),
        'regions-full-pages': walk(REGIONS | START | ROOT | BIG, around('max+1'), 3,
                                   start=le(HUGE_BIG, 2) + b'\x40'),
        'regions-small-changing': walk(REGIONS, small(5), 16, mixed,
                                       [change(DEL_SESSION, 0x8000),
                                        change(ADD_REGION, 0x8001, le(3, 2))],
                                       changes=near_regions),
        'regions-between-keys': walk(REGIONS | START | ROOT, small(2), 16,
                                     start=le(HUGE_BIG + 2, 2) + b'\x43' + le(4000, 2),
                                     changes=near_regions),
    }
    for name, data in seeds.items():
        write('list', name, data)


def main():
    if not os.path.isdir(CRIU):
        sys.exit('make-seeds: %s is missing' % CRIU)
    for target in ('proto', 'criu', 'image', 'list'):
        shutil.rmtree(os.path.join(OUT, target), ignore_errors=True)
    proto_seeds()
    criu_seeds()
    image_seeds()
    list_seeds()


if __name__ == '__main__':
    main()
