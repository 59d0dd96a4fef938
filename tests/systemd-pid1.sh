#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: systemd-pid1.sh UFFDD.SOCKET UFFDD.SERVICE UFFDD RESTORE-WORKLOAD LIBPIN HAVE-LIBSYSTEMD
#                        SYSUSERS.CONF UFFDCTL
# Suite systemd: durable sessions under the real service manager (issue 11).
# The host's systemd (252 on Debian 12) boots as PID 1 in new PID and mount
# namespaces, with /tmp, /var/tmp and /run on tmpfs of their own (its
# tmpfiles would empty the host's /tmp), the host's /tmp at /mnt/host-tmp,
# and /etc under an overlay whose writes go to a tmpfs (systemd-sysusers
# makes the uffdd user there, not in the host's /etc/passwd).  The built
# units, the sysusers.d file, uffdd, uffdctl and restore-workload are
# installed in its /run; uffdd must run as the user uffdd, its socket must
# let a member of the group uffdd in and keep anyone else out (uffdctl as
# nobody, with and without the group).  A lazy restore (restore-workload
# runs as root: a userfaultfd that reports kernel faults needs CAP_SYS_PTRACE
# or /dev/userfaultfd, root's alone here; root connects whatever the socket's
# group) reads half its pages, uffdd is killed with SIGKILL, and systemd must
# restart it (NRestarts=1, a new MainPID) with the session's descriptors from
# its fd store, after which the restore finishes byte-exact and the store
# empties once the client is gone.  The same across `systemctl restart`;
# `systemctl stop` closes the store (systemd 252, as uffdd.service and
# uffdd(8) say).  Then `systemctl poweroff` inside ends the namespace: the
# host's /tmp is intact and no process of it is left.  77 where systemd
# cannot start here.
set -u
socket_unit=$1
service_unit=$2
uffdd=$3
workload=$4
libpin=$5
have_libsystemd=$6
sysusers_conf=$7
uffdctl=$8

# The checkpoint restored: 8 MiB, 2048 pages (a header page and 2047 table
# pages, of which restore-workload reads 1023, in random order, before its
# pause).
CKPT_MIB=8
CKPT_PAGES=2048
HALF=1023
# Descriptors a restore's session keeps in the store: s<id>.conn, s<id>.uffd,
# s<id>.state and f<id> for the checkpoint's pages file.
STORED=4
# restore-workload's pause halfway, ms: time for the test to stop it there
# (SIGSTOP); one that went on first is stopped a few pages further, with
# pages still missing all the same.
PAUSE_MS=500
# Bounds, in seconds (scaled under valgrind): boot, restart, the rest of
# the restore, poweroff.  Each is 20 times or more what it takes here.
BOOT_S=30
RESTART_S=10
RESTORE_S=30
POWEROFF_S=30
POLL_S=0.02
scale=${TEST_TIME_SCALE:-1}

w='' upid='' spid='' nspid='' cpid='' client=''

# The namespace's PID 1 killed takes every process of the namespace with it;
# nsenter, outside, is killed too: it may be waiting on a stopped client.
cleanup() {
	if [ -n "$spid" ] && [ "$(readlink /proc/"$spid"/ns/pid 2>/dev/null)" = "$nspid" ]; then
		kill -KILL "$spid" 2>/dev/null
	fi
	if [ -n "$cpid" ]; then
		kill -KILL "$cpid" 2>/dev/null
		wait "$cpid" 2>/dev/null
	fi
	[ -z "$upid" ] || wait "$upid" 2>/dev/null
	[ -z "$w" ] || rm -rf "$w"
}

# exec: under meson's valgrind setup this shell is traced, and its own leaks
# at exit would turn 77 into valgrind's 99; /bin/sh is not traced.
skip() {
	echo "SKIP: $*"
	trap - EXIT
	cleanup
	exec /bin/sh -c 'exit 77'
}

[ "$(id -u)" = 0 ] || skip "new PID and mount namespaces need root"
[ "$have_libsystemd" = 1 ] || skip "uffdd is built without libsystemd: no socket activation, no fd store"
for p in unshare nsenter systemd-detect-virt pgrep readelf; do
	command -v $p >/dev/null 2>&1 || skip "no $p"
done
systemd=/usr/lib/systemd/systemd
[ -x $systemd ] || skip "no $systemd"
# Outside a container, systemd-shutdown would remount the root file system
# read-only on poweroff: the superblock is the host's, shared with this
# mount namespace.  In one (here: /.dockerenv) it leaves the mounts alone.
virt=$(systemd-detect-virt --container) ||
	skip "not in a container: systemd's poweroff would remount the host's root read-only"

t0=$(date +%s)
w=$(mktemp -d /tmp/uffdd-pid1.XXXXXX)
marker=$w/marker
echo "host /tmp, $$" >"$marker"
trap cleanup EXIT

E() {
	nsenter -t "$spid" -m -p "$@"
}

fail() {
	echo "FAIL: $*"
	if [ -n "$spid" ] && kill -0 "$spid" 2>/dev/null; then
		echo "--- systemctl status uffdd.service uffdd.socket"
		E systemctl --no-pager -n 0 status uffdd.service uffdd.socket 2>&1
		# The journal is the host's /var/log/journal (journald flushes
		# there): this boot's lines only.
		echo "--- journal of uffdd.service"
		E journalctl --no-pager -o short-monotonic --since "@$t0" -u uffdd.service 2>&1 |
			tail -n 40
	fi
	[ ! -s "$w/client.out" ] || { echo "--- restore-workload"; cat "$w/client.out"; }
	exit 1
}

# wait_for SECONDS CMD...: run CMD until it succeeds (0), at most SECONDS;
# 1 when time is up or when CMD says waiting is pointless (2).
wait_for() {
	local end=$((SECONDS + $1 * scale)) rc
	shift
	while :; do
		"$@"
		rc=$?
		[ $rc != 0 ] || return 0
		[ $rc != 2 ] && [ $SECONDS -lt $end ] || return 1
		sleep $POLL_S
	done
}

# show UNIT PROPERTY: one property's value.
show() {
	E systemctl show -P "$2" "$1"
}

# --- boot --------------------------------------------------------------------
unshare --pid --fork --mount --mount-proc --propagation private sh -c \
	'mkdir -p /mnt/host-tmp && mount --bind /tmp /mnt/host-tmp &&
	 for d in /tmp /var/tmp /run; do mount -t tmpfs tmpfs $d; done &&
	 mkdir /run/etc.upper /run/etc.work &&
	 mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc.upper,workdir=/run/etc.work /etc &&
	 exec '$systemd' --system --unit=basic.target' >"$w/pid1.log" 2>&1 &
upid=$!
is_pid1() {
	spid=$(pgrep -P "$upid") && [ "$(cat /proc/"$spid"/comm 2>/dev/null)" = systemd ]
}
wait_for $BOOT_S is_pid1 ||
	skip "systemd did not start as PID 1 of the namespace: $(tail -n 5 "$w/pid1.log")"
nspid=$(readlink /proc/"$spid"/ns/pid)
booted() {
	local st
	st=$(E systemctl is-system-running --wait 2>/dev/null)
	[ "$st" = running ] || [ "$st" = degraded ]
}
wait_for $BOOT_S booted ||
	skip "systemd in the namespace did not finish booting: $(E systemctl is-system-running 2>&1)"
echo "systemd $(E systemctl --version | head -n 1 | cut -d' ' -f2) is PID 1 of $nspid ($virt)"

# --- install -----------------------------------------------------------------
# Everything goes through stdin: the build directory may be where the
# namespace cannot see it (its /tmp, /run).
t=$(E mktemp -d /run/uffdd-pid1.XXXXXX) || fail "mktemp in the namespace's /run"
sock=$t/uffdd.sock
put() { # put SRC DEST MODE
	E sh -c 'cat >"$1" && chmod "$2" "$1"' _ "$2" "$3" <"$1" || fail "copying $1 to $2"
}
E mkdir -p "$t/sbin" "$t/examples" "$t/libpin" "$t/ckpt" || fail "mkdir in the namespace"
# nobody runs uffdctl from here and connects to the socket in it.
E chmod 755 "$t" || fail "chmod $t"
put "$uffdd" "$t/sbin/uffdd" 755
put "$uffdctl" "$t/sbin/uffdctl" 755
put "$workload" "$t/examples/restore-workload" 755
# restore-workload finds libpin at $ORIGIN/../libpin, by its soname.
soname=$(readelf -d "$libpin" | sed -n 's/^.*Library soname: \[\(.*\)\]$/\1/p')
[ -n "$soname" ] || fail "no SONAME in $libpin"
put "$libpin" "$t/libpin/$soname" 644
sed -E "s@^ListenSequentialPacket=.*@ListenSequentialPacket=$sock@" "$socket_unit" >"$w/uffdd.socket"
sed -E "s@^ExecStart=[^ ]*/uffdd( |\$)@ExecStart=$t/sbin/uffdd\1@" "$service_unit" >"$w/uffdd.service"
grep -q "^ListenSequentialPacket=$sock\$" "$w/uffdd.socket" || fail "no ListenSequentialPacket= in $socket_unit"
grep -qE "^ExecStart=$t/sbin/uffdd( |\$)" "$w/uffdd.service" || fail "no ExecStart= in $service_unit"
# The sanitizer build's options (scripts/test) reach the daemon through the
# unit: LeakSanitizer cannot run in this PID namespace and would fail the stop.
if [ -n "${ASAN_OPTIONS-}" ]; then
	printf '[Service]\nEnvironment=ASAN_OPTIONS=%s\n' "$ASAN_OPTIONS" >"$w/asan.conf"
	E mkdir -p /run/systemd/system/uffdd.service.d || fail "mkdir uffdd.service.d"
	put "$w/asan.conf" /run/systemd/system/uffdd.service.d/asan.conf 644
fi
E mkdir -p /run/sysusers.d || fail "mkdir /run/sysusers.d"
put "$sysusers_conf" /run/sysusers.d/uffdd.conf 644
E systemd-sysusers >"$w/sysusers.out" 2>&1 || fail "systemd-sysusers: $(cat "$w/sysusers.out")"
E getent passwd uffdd >/dev/null || fail "systemd-sysusers made no user uffdd"
put "$w/uffdd.socket" /run/systemd/system/uffdd.socket 644
put "$w/uffdd.service" /run/systemd/system/uffdd.service 644
E systemctl daemon-reload || fail "daemon-reload"
E systemctl start uffdd.socket || fail "systemctl start uffdd.socket"
own=$(E stat -c '%U:%G %a' "$sock") || fail "stat $sock"
[ "$own" = "root:uffdd 660" ] || fail "the socket is $own, not root:uffdd 660"
# uffdctl as nobody: in the socket's group it is served (by the uffdd this
# starts), outside it connect(2) is refused.
E setpriv --reuid=nobody --regid=nogroup --groups=uffdd "$t/sbin/uffdctl" --socket "$sock" \
	status >"$w/member.out" 2>&1 || fail "uffdctl status as nobody in group uffdd: $(cat "$w/member.out")"
E setpriv --reuid=nobody --regid=nogroup --clear-groups "$t/sbin/uffdctl" --socket "$sock" \
	status >"$w/other.out" 2>&1 && fail "uffdctl status as nobody outside group uffdd was served"
grep -q "Permission denied" "$w/other.out" ||
	fail "uffdctl status as nobody outside group uffdd: $(cat "$w/other.out"), not EACCES"
main=$(show uffdd.service MainPID)
uid=$(E sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*$/\1/p' /proc/"$main"/status)
[ -n "$uid" ] && [ "$uid" = "$(E id -u uffdd)" ] || fail "uffdd (pid $main) runs as uid '$uid', not uffdd's"
echo "uffdd runs as the user uffdd (uid $uid); its socket lets the group uffdd in, no one else"
E "$t/examples/restore-workload" checkpoint "$t/ckpt" --mib $CKPT_MIB >"$w/ckpt.out" 2>&1 ||
	fail "restore-workload checkpoint: $(cat "$w/ckpt.out")"

# --- lazy restores, stopped halfway --------------------------------------------
out=
# restore_halfway NAME: a restore (output in $w/NAME.out) that read the first
# HALF pages, stopped there (SIGSTOP) however long what follows takes, with
# its session's descriptors in the store.
restore_halfway() {
	out=$w/$1.out
	nsenter -t "$spid" -m -p "$t/examples/restore-workload" restore "$t/ckpt" \
		--socket "$sock" --touch random --no-push --pause-ms $PAUSE_MS >"$out" 2>&1 &
	cpid=$!
	wait_for $RESTORE_S halfway || fail "$1: restore-workload did not reach page $HALF"
	client=$(pgrep -P $cpid) || fail "$1: no restore-workload under nsenter $cpid"
	kill -STOP "$client"
	wait_for $RESTART_S stopped || fail "$1: restore-workload did not stop"
	[ "$(show uffdd.service ActiveState)" = active ] || fail "$1: uffdd.service is not active"
	n=$(show uffdd.service NFileDescriptorStore)
	[ "$n" = $STORED ] || fail "$1: the fd store holds $n descriptors during the restore, not $STORED"
}
halfway() {
	grep -qx "paused_at_page $HALF" "$out" && return 0
	kill -0 "$cpid" 2>/dev/null || return 2
	return 1
}
# nsenter's child is the client: it has no stat line once it is gone.
stopped() {
	[ "$(sed 's/^.*) \(.\).*$/\1/' /proc/"$client"/stat 2>/dev/null)" = T ]
}
# restore_finish NAME: the rest of the restore, byte-exact; then the store
# empties.
restore_finish() {
	local rc=0 want
	# nsenter stopped itself when its child stopped (as a shell's job
	# would): both go on.
	kill -CONT "$client" "$cpid"
	wait_for $RESTORE_S client_done || fail "$1: restore-workload did not finish"
	wait "$cpid" || rc=$?
	cpid=
	[ $rc = 0 ] || fail "$1: restore-workload exits $rc"
	for want in "pages_checked $CKPT_PAGES" "bad_pages 0" "lookups_missing 0" "verified ok"; do
		grep -qx "$want" "$out" || fail "$1: restore-workload does not say '$want'"
	done
	wait_for $RESTART_S store_empty ||
		fail "$1: the fd store holds $(show uffdd.service NFileDescriptorStore) descriptors" \
			"after the client exited, not 0"
	echo "$1: restore byte-exact, $CKPT_PAGES pages checked; the fd store empty after it"
}
client_done() {
	! kill -0 "$cpid" 2>/dev/null
}
store_empty() {
	[ "$(show uffdd.service NFileDescriptorStore)" = 0 ]
}
# restarted N: active again, in a new process, after N automatic restarts.
restarted() {
	[ "$(show uffdd.service ActiveState)" != failed ] || return 2
	[ "$(show uffdd.service NRestarts)" = "$1" ] &&
		[ "$(show uffdd.service ActiveState)" = active ] &&
		[ "$(show uffdd.service MainPID)" != "$old" ] &&
		[ "$(show uffdd.service MainPID)" != 0 ]
}

# --- kill -9: systemd restarts uffdd with the store -----------------------------
restore_halfway kill
old=$(show uffdd.service MainPID)
[ "$(show uffdd.service NRestarts)" = 0 ] || fail "kill: NRestarts is $(show uffdd.service NRestarts) before it"
E systemctl kill -s KILL uffdd.service || fail "systemctl kill -s KILL uffdd.service"
wait_for $RESTART_S restarted 1 ||
	fail "kill: systemd did not restart uffdd once: NRestarts=$(show uffdd.service NRestarts)" \
		"ActiveState=$(show uffdd.service ActiveState) MainPID=$(show uffdd.service MainPID) (was $old)"
n=$(show uffdd.service NFileDescriptorStore)
[ "$n" = $STORED ] || fail "kill: the fd store holds $n descriptors after the restart, not $STORED"
echo "kill: uffdd killed (pid $old) and restarted (pid $(show uffdd.service MainPID)) with $n stored descriptors"
restore_finish kill

# --- systemctl restart: the store is kept (systemd 252) -------------------------
restore_halfway restart
old=$(show uffdd.service MainPID)
E systemctl restart uffdd.service || fail "systemctl restart uffdd.service"
# A restart asked for is not counted: NRestarts starts again from 0.
wait_for $RESTART_S restarted 0 ||
	fail "restart: uffdd is not running again: NRestarts=$(show uffdd.service NRestarts)" \
		"ActiveState=$(show uffdd.service ActiveState) MainPID=$(show uffdd.service MainPID) (was $old)"
n=$(show uffdd.service NFileDescriptorStore)
[ "$n" = $STORED ] || fail "restart: the fd store holds $n descriptors after it, not $STORED"
restore_finish restart

# --- systemctl stop: the store is closed (systemd 252) --------------------------
restore_halfway stop
E systemctl stop uffdd.service 2>/dev/null || fail "systemctl stop uffdd.service"
[ "$(show uffdd.service ActiveState)" = inactive ] || fail "stop: uffdd.service is $(show uffdd.service ActiveState)"
n=$(show uffdd.service NFileDescriptorStore)
[ "$n" = 0 ] || fail "stop: the fd store holds $n descriptors after it, not 0"
# The client's faults now wait for a daemon that is gone (uffdd(8), Stop).
kill -KILL "$cpid" "$client"
wait "$cpid" 2>/dev/null
cpid=
echo "stop: the fd store closed with the session in it"

# --- poweroff -----------------------------------------------------------------
timeout $((POWEROFF_S * scale)) nsenter -t "$spid" -m -p systemctl poweroff ||
	fail "systemctl poweroff in the namespace"
pid1_gone() {
	! kill -0 "$upid" 2>/dev/null
}
wait_for $POWEROFF_S pid1_gone || fail "the namespace's PID 1 did not exit after poweroff"
wait "$upid"
upid=
left() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/pid" 2>/dev/null)" != "$nspid" ] || return 0
	done
	return 1
}
none_left() {
	! left
}
wait_for $POWEROFF_S none_left || fail "processes of $nspid are left after poweroff"
spid=
[ "$(cat "$marker" 2>/dev/null)" = "host /tmp, $$" ] || fail "the host's /tmp lost $marker"
rm -rf "$w"
trap - EXIT
# exec: under meson's valgrind setup the shell itself is traced, and its own
# leaks at exit are not what the test is about.
exec echo "ok: poweroff left the host's /tmp intact and no process behind"
