#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Suite criu: real CRIU dumps the multi-task workload (criu-workload.c) and
# restores it lazily, its pages served by uffdd-lazy-pages through uffdd (or
# by `criu lazy-pages` with SERVER=criu, for comparison).  Every byte of every
# task that lives is checked; child 2 exits right after the restore, before
# its pages are all in; child 1 exits once it checked every byte, which may
# come before its push ended (the pages it never reads, the parent's threads'
# regions it inherited, still to come): uffdd-lazy-pages then names it as
# gone, with at least the pages it read in.  The parent, which lives until
# it is killed, is never named as gone.
#
# usage: criu-lazy.sh WORKLOAD UFFDD LAZY_PAGES [ITERATIONS]
# $CRIU, else criu on PATH: at least 4.1 (Debian 12's 3.17 does not run on
# this kernel); root.  Exit 77 with the reason when either is missing.
# RESTART=1: kill -9 uffdd's serving process right after the restore (its
# supervisor starts another, which takes the sessions over from the fd
# store); a new uffdd for each run.  REMOTE=1: the lazy pages come from
# `criu page-server --lazy-pages` over the dump on 127.0.0.1, through
# `uffdd-lazy-pages --page-server` (or `criu lazy-pages --page-server`),
# which must say each task's lazy pages are on the page server (uffdd asks
# for them; with RESTART=1 its successor takes the connection over too).
# LAZY_DUMP=1: the same from `criu dump --lazy-pages --address 127.0.0.1
# --port P` itself, which keeps the dumped tree (frozen) until the pages are
# all taken: the workload runs in a pid namespace of its own (the restored
# tree gets another), the pid files hold its pids there, and the dump must
# end with status 0 once uffdd-lazy-pages closes the connection.  Prints
# per run: `run N: restore returned after MS ms, uffdd-lazy-pages
# exit S, parent ok|bad, child1 ok|bad`, then a `metric` line of the
# restore times.  PREDUMP=1: a pre-dump chain (issue 17): `criu pre-dump`,
# then the parent writes a quarter of its region A again (SIGUSR2,
# criu-workload.c), then `criu dump --prev-images-dir ../pre --track-mem`,
# whose pagemap leaves the pages not written again to the pre-dump
# (PE_PARENT): every byte checked is the newest, from one dump or the other.
# It needs soft-dirty tracking (`criu check --feature mem_dirty_track`);
# without it the test exits 77 saying so.  SPLIT=1 (with $CRIU_SPLIT, the criu-split
# program): where no pre-dump can be made, the parent's plain dump split
# into a chain of three as CRIU writes one (tests/criu-split.c: a page held
# by a newer dump holds stale bytes in the older ones), restored from the
# newest by `criu restore --lazy-pages`.  Leaves nothing behind: every task of the tree is killed by
# the pid it wrote, the daemon by its pid.
set -u

WORKLOAD=$1 UFFDD=$2 LAZY_PAGES=$3 ITERATIONS=${4:-3}
SERVER=${SERVER:-uffdd}
# Pages each checked task holds (criu-workload.c): the parent's A, B, C and
# two threads' regions; child 1's A, B, C and D.
PARENT_PAGES=10240 CHILD1_PAGES=10240
# Bounds, in tenths of a second: a wait past one is a failure, not a hang.
WAIT_FILE=300 WAIT_EXIT=600

# Under `meson test --setup=valgrind` this shell is traced: its leaks at
# exit would turn 77 into valgrind's 99, and a failure's 1 too; /bin/sh is
# not traced.
skip() {
	echo "SKIP: $*"
	exec /bin/sh -c 'exit 77'
}

[ "$(id -u)" = 0 ] || skip "CRIU needs root"
CRIU=${CRIU:-$(command -v criu || true)}
[ -n "$CRIU" ] && [ -x "$CRIU" ] || skip "no criu (set \$CRIU or put criu on PATH)"
ver=$("$CRIU" --version 2>/dev/null | sed -n 's/^Version: *//p')
major=${ver%%.*} minor=${ver#*.}
minor=${minor%%.*}
case "$major$minor" in *[!0-9]* | '') skip "$CRIU: cannot tell its version ('$ver')" ;; esac
[ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 1 ]; } ||
	skip "$CRIU is $ver; lazy restore here needs 4.1 or later"

if [ "${PREDUMP:-0}" = 1 ] || [ "${SPLIT:-0}" = 1 ]; then
	[ "${REMOTE:-0}${LAZY_DUMP:-0}" = 00 ] || skip "PREDUMP=1 and SPLIT=1 are not combined with REMOTE or LAZY_DUMP"
fi
[ "${SPLIT:-0}" = 0 ] || [ -x "${CRIU_SPLIT:-}" ] || { echo "SPLIT=1 needs \$CRIU_SPLIT"; exit 1; }
if [ "${PREDUMP:-0}" = 1 ]; then
	[ "${REMOTE:-0}${LAZY_DUMP:-0}" = 00 ] || skip "PREDUMP=1 is not combined with REMOTE or LAZY_DUMP"
	# criu pre-dump finds the pages written since through soft-dirty
	# bits; a kernel without them fails it ("BUG at criu/mem.c").
	"$CRIU" check --feature mem_dirty_track >/dev/null 2>&1 ||
		skip "criu check --feature mem_dirty_track fails: no soft-dirty tracking here" \
			"(CONFIG_MEM_SOFT_DIRTY), so criu pre-dump cannot run"
fi

# CRIU's page server sizes the pipe it tees pages through to 3.2 MiB and
# goes on when that fails (fs.pipe-max-size is 1 MiB by default, and root
# without CAP_SYS_RESOURCE is held to it): then the first GET that does not
# start a buffer of its fails (EBADF) and the server hangs up.
[ "${LAZY_DUMP:-0}" = 1 ] && REMOTE=1
if [ "${REMOTE:-0}" = 1 ]; then
	cap_sys_resource=$((0x$(sed -n 's/^CapEff:\t*//p' /proc/self/status) >> 24 & 1))
	[ "$(cat /proc/sys/fs/pipe-max-size)" -ge 4194304 ] || [ $cap_sys_resource = 1 ] ||
		skip "criu page-server fails here: fs.pipe-max-size < 4 MiB and no CAP_SYS_RESOURCE"
fi

top=$(mktemp -d "${TMPDIR:-/tmp}/criu-lazy.XXXXXX") || exit 1
daemon=
pids=()
fail=0

cleanup() {
	[ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
	[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	rm -rf "$top"
}
trap cleanup EXIT

# poll COMMAND...: until it succeeds, WAIT_FILE tenths at most.
poll() {
	local n=0
	until "$@"; do
		[ $n -ge $WAIT_FILE ] && return 1
		sleep 0.1
		n=$((n + 1))
	done
}

# wait_for FILE: until it exists.
wait_for() {
	poll test -e "$1"
}

# gone PID: until no process has the pid (zombies too).
gone() {
	poll test ! -e "/proc/$1"
}

# wait_exit PID: its exit status, or 124 after WAIT_EXIT tenths (then killed).
wait_exit() {
	local n=0
	while kill -0 "$1" 2>/dev/null; do
		if [ $n -ge $WAIT_EXIT ]; then
			kill -KILL "$1"
			wait "$1" 2>/dev/null
			return 124
		fi
		sleep 0.1
		n=$((n + 1))
	done
	wait "$1"
}

# start_daemon: uffdd on $sock, its pid in $daemon.
start_daemon() {
	"$UFFDD" --socket "$sock" >>"$top/uffdd.log" 2>&1 &
	daemon=$!
	wait_for "$sock" || { echo "uffdd did not listen"; cat "$top/uffdd.log"; exit 1; }
}

stop_daemon() {
	kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	daemon=
	rm -f "$sock"
}

sock=$top/uffdd.sock

# start_page_server: `criu page-server --lazy-pages` over $dir/dump on a
# free port of 127.0.0.1 ($port), its pid in $page_server.  A port another
# program took is tried again with another.
start_page_server() {
	local try
	for try in $(seq 1 20); do
		port=$((20000 + (RANDOM % 20000)))
		"$CRIU" page-server --lazy-pages -D "$dir/dump" --address 127.0.0.1 \
			--port "$port" -o page-server.log -v4 >"$dir/page-server.out" 2>&1 &
		page_server=$!
		pids+=("$page_server")
		# Listening, or gone (the port was taken).
		poll listening_or_gone
		kill -0 "$page_server" 2>/dev/null && return 0
		wait "$page_server" 2>/dev/null
	done
	echo "criu page-server did not listen"
	tail -5 "$dir/dump/page-server.log"
	return 1
}

listening_or_gone() {
	ss -Hltn "sport = :$port" | grep -q . || ! kill -0 "$page_server" 2>/dev/null
}

# start_lazy_dump: `criu dump --lazy-pages` of the tree, its page server on
# a port of 127.0.0.1 ($port) that nothing listened on a moment ago; its pid
# in $page_server.
start_lazy_dump() {
	port=$((20000 + (RANDOM % 20000)))
	ss -Hltn "sport = :$port" | grep -q . && port=$((port + 1))
	"$CRIU" dump --lazy-pages --address 127.0.0.1 --port "$port" -t "$(hpid parent)" \
		-D "$dir/dump" -o dump.log -v4 >"$dir/dump.out" 2>&1 &
	page_server=$!
	if ! poll listening_or_gone || ! kill -0 "$page_server" 2>/dev/null; then
		echo "criu dump --lazy-pages did not listen"
		tail -20 "$dir/dump/dump.log"
		return 1
	fi
}

# hpid ROLE: the pid of the workload's task ROLE as seen here.  In a pid
# namespace of its own (LAZY_DUMP) its pid file holds its pid there: the
# task of the tree now running (the restored one, once the dumped one is
# gone) that has that pid in its namespace.
hpid() {
	local want p
	want=$(cat "$dir/pid-$1")
	if [ "${LAZY_DUMP:-0}" != 1 ]; then
		echo "$want"
		return
	fi
	for p in $(pgrep -x -f "$WORKLOAD $dir"); do
		[ "$(awk '/^NSpid:/ { print $NF }' "/proc/$p/status" 2>/dev/null)" = "$want" ] &&
			echo "$p" && return
	done
}
[ "$SERVER" = uffdd ] && start_daemon

# waiting_sp TASKDIR: the thread's stack pointer in $sp when it waits
# (/proc/PID/task/TID/syscall: NR ARGS... SP PC, or -1 SP PC), else fails
# (it says "running").
waiting_sp() {
	local -a fields
	read -r -a fields <"$1/syscall" || return 1
	[ ${#fields[@]} -ge 3 ] || return 1
	sp=${fields[${#fields[@]} - 2]}
}

# stacks_off_boundary: every thread of the workload waits with its stack
# pointer off a page boundary.  CRIU 4.2's is_stack() (criu/mem.c) takes
# every page of a task for a stack page, not lazy, when one of its threads
# has it on one.
stacks_off_boundary() {
	local r t sp
	for r in parent child1 child2; do
		for t in /proc/"$(hpid $r)"/task/*; do
			if ! poll waiting_sp "$t"; then
				echo "run $i: $r's thread ${t##*/} does not wait"
				return 1
			fi
			if [ $((sp % 4096)) = 0 ]; then
				echo "run $i: $r's thread ${t##*/} waits with its stack pointer ($sp)" \
					"on a page boundary: CRIU 4.2 would dump none of its task's pages lazy"
				return 1
			fi
		done
	done
}

# check ROLE PAGES: the task's result says every byte of PAGES pages is right.
check() {
	local f=$dir/result-$1
	if ! wait_for "$f"; then
		echo "  $1: no result (the task died: a fault read something it cannot have)"
		return 1
	fi
	if [ "$(cat "$f")" != "ok $2" ]; then
		echo "  $1: $(cat "$f") (want: ok $2)"
		return 1
	fi
}

# predump_then_rewrite: `criu pre-dump` of the tree into $dir/pre, then the
# parent writes pages of A again; ${prev[@]}: the dump's options for it.
predump_then_rewrite() {
	mkdir -p "$dir/pre"
	if ! "$CRIU" pre-dump -t "$(cat "$dir/pid-parent")" -D "$dir/pre" -o pre-dump.log -v4; then
		echo "run $i: criu pre-dump failed"
		tail -20 "$dir/pre/pre-dump.log"
		return 1
	fi
	kill -USR2 "$(cat "$dir/pid-parent")"
	wait_for "$dir/rewritten-parent" || { echo "run $i: the parent did not write again"; return 1; }
	prev=(--prev-images-dir ../pre --track-mem)
}

# in_parent_entries DIR PID: how many pagemap entries of the task leave
# their pages to the parent dump (`crit decode`; empty without crit).
in_parent_entries() {
	command -v crit >/dev/null || return 0
	crit decode -i "$1/pagemap-$2.img" 2>/dev/null | grep -c '"flags": "PE_PARENT"'
}

# gone_as_told: uffdd-lazy-pages named no live task as gone: not the
# parent; child 1 only with the pages it read all in (counted in
# $child1_early).
gone_as_told() {
	local out=$dir/lazy-pages.out placed
	if grep -q "task $(cat "$dir/pid-parent") exited before" "$out"; then
		echo "  the parent, which lives, was named as gone:"
		return 1
	fi
	grep -q "task $(cat "$dir/pid-child1") exited before" "$out" || return 0
	child1_early=$((child1_early + 1))
	placed=$(sed -n "s/.*task $(cat "$dir/pid-child1") exited before its pages were all in (\([0-9]*\) of its .*/\1/p" "$out")
	if [ -z "$placed" ] || [ "$placed" -lt $CHILD1_PAGES ]; then
		echo "  child 1 was named as gone with ${placed:-an unknown number of} pages in, not the $CHILD1_PAGES it read:"
		return 1
	fi
}

prev=()
times=()
gone_early=0 child1_early=0
for i in $(seq 1 "$ITERATIONS"); do
	dir=$top/run$i
	mkdir -p "$dir/dump" "$dir/work"
	# Its own session, not our child: CRIU dumps it without our terminal
	# or job, and init reaps it.
	# A pid namespace's first task must lead its session for CRIU.
	ns=()
	[ "${LAZY_DUMP:-0}" = 1 ] && ns=(unshare --pid --fork setsid)
	setsid -f "${ns[@]}" "$WORKLOAD" "$dir" </dev/null >"$dir/workload.log" 2>&1
	for r in parent child1 child2; do
		wait_for "$dir/pid-$r" || { echo "run $i: the workload did not start"; exit 1; }
		pids+=("$(hpid $r)")
	done
	stacks_off_boundary || exit 1
	if [ "${LAZY_DUMP:-0}" = 1 ]; then
		start_lazy_dump || exit 1
		touch "$dir/exit-child2"
	elif [ "${PREDUMP:-0}" = 1 ] && ! predump_then_rewrite; then
		exit 1
	elif ! "$CRIU" dump -t "$(cat "$dir/pid-parent")" -D "$dir/dump" "${prev[@]}" -o dump.log \
		-v4; then
		echo "run $i: criu dump failed"
		tail -20 "$dir/dump/dump.log"
		exit 1
	else
		# The dumped tree is gone, but its pids are free for the restore
		# only once init reaped them.
		touch "$dir/exit-child2"
		for r in parent child1 child2; do
			gone "$(cat "$dir/pid-$r")" || { echo "run $i: $r outlived the dump"; exit 1; }
		done
	fi
	if [ "${PREDUMP:-0}" = 1 ]; then
		# The dump names its parent, and leaves it pages.
		if [ "$(readlink "$dir/dump/parent")" != ../pre ]; then
			echo "run $i: the dump has no parent link to ../pre"
			exit 1
		fi
		n=$(in_parent_entries "$dir/dump" "$(cat "$dir/pid-parent")")
		if [ "$n" = 0 ]; then
			echo "run $i: no pagemap entry of the parent's dump is in the pre-dump"
			exit 1
		fi
		echo "run $i: ${n:-(no crit to count)} of the parent's pagemap entries in the pre-dump"
	fi
	# What is restored: the dump, or the newest of the chain split from it.
	images=$dir/dump
	if [ "${SPLIT:-0}" = 1 ]; then
		if ! "$CRIU_SPLIT" "$dir/dump" "$(cat "$dir/pid-parent")" "$dir/chain" 3 \
			>"$dir/split.out" 2>&1; then
			echo "run $i: criu-split failed:"
			cat "$dir/split.out"
			exit 1
		fi
		images=$dir/chain/0
	fi
	remote=()
	if [ "${REMOTE:-0}" = 1 ]; then
		[ "${LAZY_DUMP:-0}" = 1 ] || start_page_server || exit 1
		remote=(--page-server --address 127.0.0.1 --port "$port")
	fi
	if [ "$SERVER" = uffdd ]; then
		"$LAZY_PAGES" -D "$images" -W "$dir/work" --socket "$sock" "${remote[@]}" \
			>"$dir/lazy-pages.out" 2>&1 &
	else
		"$CRIU" lazy-pages -D "$images" -W "$dir/work" -o lazy-pages.log -v4 \
			"${remote[@]}" >"$dir/lazy-pages.out" 2>&1 &
	fi
	server=$!
	if ! wait_for "$dir/work/lazy-pages.socket"; then
		echo "run $i: no lazy-pages.socket"
		cat "$dir/lazy-pages.out"
		exit 1
	fi
	t0=$(date +%s%N)
	if ! "$CRIU" restore -D "$images" -W "$dir/work" --lazy-pages -d -o restore.log -v4; then
		echo "run $i: criu restore failed"
		tail -20 "$dir/work/restore.log"
		echo "its lazy-pages said:"
		sed 's/^/    /' "$dir/lazy-pages.out"
		fail=$((fail + 1))
		kill -KILL "$server" 2>/dev/null
		continue
	fi
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	times+=("$ms")
	ok=1
	# The dumped tree goes when the dump ends, once its page server
	# was told the pages are all taken.
	if [ "${LAZY_DUMP:-0}" = 1 ]; then
		wait_exit "$page_server" ||
			{ ok=0; echo "  criu dump --lazy-pages failed:"; tail -5 "$dir/dump/dump.log"; }
		pids+=($(pgrep -x -f "$WORKLOAD $dir"))
	fi
	# Child 2 went as soon as it ran (exit-child2); the others check
	# every byte.
	kill -USR1 "$(hpid parent)" "$(hpid child1)"
	if [ "${RESTART:-0}" = 1 ]; then
		kill -KILL "$(pgrep -P "$daemon")"
	fi
	check parent $PARENT_PAGES || ok=0
	check child1 $CHILD1_PAGES || ok=0
	wait_exit "$server"
	status=$?
	if [ "$SERVER" = uffdd ] && [ $status -ne 0 ]; then
		ok=0
		echo "  uffdd-lazy-pages exited $status:"
		sed 's/^/    /' "$dir/lazy-pages.out"
	fi
	# Through the page server, each of the three tasks had its lazy pages
	# from it, and none of them came from anywhere else.  CRIU dumped some
	# lazy for each as no thread waited with its stack pointer on a page
	# boundary (stacks_off_boundary).
	if [ "$SERVER" = uffdd ] && [ "${REMOTE:-0}" = 1 ]; then
		fetched=$(grep -c -E 'pages (on|from) the page server' "$dir/lazy-pages.out")
		empty=$(grep -c -E ': 0 pages (on|from) the page server' "$dir/lazy-pages.out")
		if [ "$fetched" != 3 ] || [ "$empty" != 0 ]; then
			ok=0
			echo "  $fetched tasks had their pages from the page server (want 3), $empty none"
		fi
		[ "${LAZY_DUMP:-0}" = 1 ] || wait_exit "$page_server" ||
			{ ok=0; echo "  criu page-server failed:"; tail -5 "$dir/dump/page-server.log"; }
	fi
	# Whether child 2 was gone before uffdd-lazy-pages said Goodbye for
	# it depends on the order CRIU sent the tasks in (a Goodbye before
	# child 2 ran pushes all its pages): counted, not asserted (suite
	# restore asserts it, with the task reaped before the end).
	gone_line="task $(cat "$dir/pid-child2") exited before its pages were all in"
	grep -q "$gone_line" "$dir/lazy-pages.out" && gone_early=$((gone_early + 1))
	if [ "$SERVER" = uffdd ] && ! gone_as_told; then
		ok=0
		sed 's/^/    /' "$dir/lazy-pages.out"
	fi
	echo "run $i: restore returned after $ms ms, $SERVER lazy-pages exit $status, $([ $ok = 1 ] && echo ok || echo FAILED)"
	[ "$SERVER" = uffdd ] && sed -n 's/^uffdd-lazy-pages: /  /p' "$dir/lazy-pages.out" | grep -e exited -e restored
	[ $ok = 1 ] || fail=$((fail + 1))
	kill -KILL $(pgrep -x -f "$WORKLOAD $dir") 2>/dev/null
	rm -rf "$dir/dump" "$dir/pre" "$dir/chain"
	# Its supervisor gives up after a burst of quick restarts (uffdd(8)):
	# a new daemon for each run that kills one.
	if [ "${RESTART:-0}" = 1 ]; then
		stop_daemon
		start_daemon
	fi
done
[ "${RESTART:-0}" = 1 ] && echo "uffdd took over after a restart $(grep -c 'restarting it with' "$top/uffdd.log") times"
[ "$SERVER" = uffdd ] && echo "child 2 exited before its pages were all in: $gone_early of $ITERATIONS runs"
[ "$SERVER" = uffdd ] && echo "child 1 exited (after its check) before its push ended: $child1_early of $ITERATIONS runs"
echo "restore returned after (ms): ${times[*]}"
if [ ${#times[@]} -gt 0 ]; then
	median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((${#times[@]} + 1) / 2))p")
	echo "metric criu_restore_return_${SERVER}_median $median ms"
fi
trap - EXIT
cleanup
exec /bin/sh -c "echo '$fail of $ITERATIONS runs failed'; [ $fail -eq 0 ]"
