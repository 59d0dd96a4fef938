#!/bin/sh
# SPDX-License-Identifier: MIT
# Restore a Firecracker microVM snapshot with uffdd as its page-fault handler
# (uffdd(8), FIRECRACKER): the VM runs at once, its memory arrives as the
# guest touches it and in the background, and pages its balloon gives back
# read as zero.
#
# Usage: firecracker-uffd.sh SNAPSHOT_DIR [FIRECRACKER_API_SOCKET]
#   SNAPSHOT_DIR  what PUT /snapshot/create wrote, with
#                 {"snapshot_path": "SNAPSHOT_DIR/vmstate",
#                  "mem_file_path": "SNAPSHOT_DIR/mem"}
#   FIRECRACKER_API_SOCKET  a Firecracker process started with --api-sock and
#                 not yet configured: the snapshot is loaded into it (curl).
#                 Without it, the request is printed.
# uffdd serves until this script is stopped (SIGTERM or Ctrl-C).  $UFFDD
# names the uffdd to run (default: uffdd from $PATH).
#
# Under systemd run nothing of this: add the socket to uffdd.socket and the
# options to uffdd.service (uffdd(8), FIRECRACKER):
#   systemctl edit uffdd.socket   ->  [Socket]
#                                     ListenStream=/run/uffdd/firecracker.sock
#   systemctl edit uffdd.service  ->  [Service]
#                                     Environment="UFFDD_FIRECRACKER=--firecracker-socket /run/uffdd/firecracker.sock --mem-file /var/lib/vm/mem"
# and give Firecracker "backend_path": "/run/uffdd/firecracker.sock".
# There, with the service's fd store, a restart of uffdd keeps the VMs it
# serves and the working set the last VM left for the next one (fd store
# name w1); this script runs uffdd without a store, so stopping it stops
# both.  A secret-free snapshot (guest memory in a guest_memfd) is refused
# with the reason the kernel gives (uffdd(8), FIRECRACKER).
set -eu

[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n 8,14p "$0" >&2; exit 2; }
dir=$(realpath "$1")
api=${2:-}
[ -f "$dir/vmstate" ] && [ -f "$dir/mem" ] ||
	{ echo "$dir: no vmstate and mem (Firecracker's snapshot)" >&2; exit 1; }

# uffdd's own control socket (uffdctl --socket) and the one Firecracker
# connects to (SOCK_STREAM: Firecracker's side of the handshake).
ctl=$dir/uffdd.sock
vm=$dir/firecracker-uffd.sock

# The memory file is named here, by the administrator: the VM only says
# where in it each of its regions lies, and uffdd checks that it fits.
"${UFFDD:-uffdd}" --no-supervisor --socket "$ctl" --firecracker-socket "$vm" \
	--mem-file "$dir/mem" &
uffdd=$!
trap 'kill -TERM $uffdd 2>/dev/null; wait $uffdd' EXIT
trap 'exit 0' INT TERM
# Up once both sockets are there (uffdd binds them before it serves).
i=0
until [ -S "$ctl" ] && [ -S "$vm" ]; do
	kill -0 $uffdd 2>/dev/null || { echo "uffdd did not start" >&2; exit 1; }
	i=$((i + 1))
	[ $i -le 100 ] || { echo "uffdd did not bind $vm within 10 s" >&2; exit 1; }
	sleep 0.1
done

# Firecracker's snapshot load: the Uffd backend names uffdd's socket, not
# the memory file.
load=$(cat <<EOF
{"snapshot_path": "$dir/vmstate",
 "mem_backend": {"backend_type": "Uffd", "backend_path": "$vm"},
 "resume_vm": true}
EOF
)
if [ -n "$api" ]; then
	curl --fail --silent --show-error --unix-socket "$api" -X PUT \
		-H 'Content-Type: application/json' -d "$load" http://localhost/snapshot/load
	echo "VM restored; uffdctl --socket $ctl clients shows its session"
else
	echo "PUT /snapshot/load on Firecracker's API socket:"
	echo "$load"
fi
wait $uffdd
