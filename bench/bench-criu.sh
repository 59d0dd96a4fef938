#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench-criu [RUNS] [--smoke] [--fetch-all]: real CRIU restores a workload
# lazily (criu-touch: one task that mapped and wrote 256 MiB, then 1 GiB),
# served by uffdd-lazy-pages + uffdd and by `criu lazy-pages`, the two
# interleaved in one run over the same dump (its pages file warm in the page
# cache), each first in every other run, each restore after a pause and a
# `criu check` (settle(), restore()).  Local: the lazy-pages server reads the dump's images.  Remote:
# it fetches the pages from `criu page-server --lazy-pages` over the dump on
# 127.0.0.1 (`--page-server --address --port`, a new page server for each
# restore).  After the restore the task reads one word of every page, in
# address order (seq) or in a random one (rand).  Per size, order and
# WHERE (local, remote), medians of RUNS runs (default 3) of each server:
#   criu_<size>_<order>_<where>_start_ms_<server>  until `criu restore` returns
#   criu_<size>_<order>_<where>_done_ms_<server>   until the last page is read
#   criu_<size>_<order>_<where>_start_x            uffdd's over criu's
#   criu_<size>_<order>_<where>_done_x
# and per size and WHERE, over the runs of both orders (the order is told
# to the task only once `criu restore` returned, so it cannot change the
# start; twice the runs for a figure whose spread between runs is as large
# as the two servers' difference):
#   criu_<size>_<where>_start_ms_<server>, criu_<size>_<where>_start_x
# and a comment line per row with every run's figures, and the CPU time
# uffdd's serving process spent on each restore until the last page was
# read (schedstat; where the done time goes: issue 13).  Per size, the
# floor, measured once beside each run of the random rows (copy-floor: two
# threads' UFFDIO_COPY of the dump's pages file, no fault, no daemon):
#   criu_<size>_floor_ms   what placing those bytes costs on two CPUs
#   criu_<size>_floor_x    over criu's rand local done time: the lowest
#                          rand local done_x this machine allows
# --smoke: one run of each over 16 MiB (the names keep 256m and 1g).
# --fetch-all: uffdd-lazy-pages fetches the remote pages all before the
# restore goes on (its --fetch-all) instead of lazily.
# $CRIU, else criu on PATH, at least 4.1, and root: without them it prints
# `skip: REASON` and exits 0.  CRIU's page server needs fs.pipe-max-size of
# 4 MiB or CAP_SYS_RESOURCE (tests/criu-lazy.sh says why); this benchmark
# changes no sysctl: without either it prints the local rows and one line
# `skip: remote rows: REASON`.  $UFFDD, $UFFDD_LAZY_PAGES: else the ones built
# next to this benchmark.  Leaves nothing behind: the restored task is
# killed by its pid, uffdd by its pid, the temporary directory removed.
set -u

bin=$(cd "$(dirname "$0")" && pwd)
UFFDD=${UFFDD:-$bin/../uffdd/uffdd}
LAZY_PAGES=${UFFDD_LAZY_PAGES:-$bin/../uffdd/tools/uffdd-lazy-pages}
TOUCH=$bin/criu-touch
FLOOR=$bin/copy-floor
RUNS=3 smoke=0 fetch_all=()
for a in "$@"; do
	case $a in
	--smoke) smoke=1 ;;
	--fetch-all) fetch_all=(--fetch-all) ;;
	*[!0-9]* | '' | 0) echo "usage: bench-criu [RUNS] [--smoke] [--fetch-all]" >&2; exit 2 ;;
	*) RUNS=$a ;;
	esac
done
# Sizes in MiB, each with the name its metrics carry.
sizes=(256 1024) names=(256m 1g)
[ $smoke = 1 ] && RUNS=1 sizes=(16 16)
# Bounds, in tenths of a second: a wait past one is a failure, not a hang
# (criu lazy-pages took 44 s to serve 1 GiB in a random order).
WAIT_FILE=1200

skip() {
	echo "skip: $*"
	exit 0
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

# The remote rows' page server (tests/criu-lazy.sh): 3.2 MiB pipes.
wheres=(local remote)
cap_sys_resource=$((0x$(sed -n 's/^CapEff:\t*//p' /proc/self/status) >> 24 & 1))
remote_skip=
[ "$(cat /proc/sys/fs/pipe-max-size)" -ge 4194304 ] || [ $cap_sys_resource = 1 ] || {
	wheres=(local)
	remote_skip="criu page-server fails here: fs.pipe-max-size < 4 MiB and no CAP_SYS_RESOURCE"
}

top=$(mktemp -d "${TMPDIR:-/tmp}/bench-criu.XXXXXX") || exit 1
daemon= task= server= page_server=

cleanup() {
	[ -n "$task" ] && kill -KILL "$task" 2>/dev/null
	[ -n "$server" ] && kill -KILL "$server" 2>/dev/null
	[ -n "$page_server" ] && kill -KILL "$page_server" 2>/dev/null
	[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	rm -rf "$top"
}
trap cleanup EXIT

die() {
	echo "bench-criu: $*" >&2
	exit 1
}

# poll COMMAND...: until it succeeds, WAIT_FILE tenths at most.
poll() {
	local n=0
	until "$@"; do
		[ $n -ge $WAIT_FILE ] && return 1
		sleep 0.1
		n=$((n + 1))
	done
}

# median N...: of its arguments (of an even count, the mean of the two in
# the middle).
median() {
	printf '%s\n' "$@" | sort -n |
		awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2) }'
}

# ratio A B: A / B with three decimals.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'
}

sock=$top/uffdd.sock
"$UFFDD" --socket "$sock" >"$top/uffdd.log" 2>&1 &
daemon=$!
poll test -S "$sock" || die "uffdd did not listen: $(cat "$top/uffdd.log")"

# dump MIB: a fresh criu-touch of MIB MiB dumped into $dir/dump; its pid in
# $pid, free again once this returns.
dump() {
	dir=$top/m$1
	mkdir -p "$dir/dump" "$dir/work"
	# Its own session (CRIU dumps it without our terminal), yet our
	# child: reaped here at once, not whenever init gets to it.
	setsid "$TOUCH" "$dir" "$1" </dev/null >"$dir/touch.log" 2>&1 &
	task=$!
	# Reaped all the same, without a word when the dump kills it.
	disown "$task"
	poll test -e "$dir/pid" || die "criu-touch did not start: $(cat "$dir/touch.log")"
	pid=$(cat "$dir/pid")
	[ "$pid" = "$task" ] || die "criu-touch is $pid, not our child $task"
	"$CRIU" dump -t "$pid" -D "$dir/dump" -o dump.log ||
		die "criu dump failed: $(tail -5 "$dir/dump/dump.log")"
	poll test ! -e "/proc/$task" || die "the dumped task $task outlived the dump"
	task=
}

# start_page_server: `criu page-server --lazy-pages` over $dir/dump on a
# free port of 127.0.0.1 ($port), its pid in $page_server.  A port another
# program took is tried again with another.
start_page_server() {
	local _
	for _ in $(seq 1 20); do
		port=$((20000 + (RANDOM % 20000)))
		"$CRIU" page-server --lazy-pages -D "$dir/dump" --address 127.0.0.1 \
			--port "$port" -o page-server.log >"$dir/page-server.out" 2>&1 &
		page_server=$!
		# Listening, or gone (the port was taken).
		poll listening_or_gone
		kill -0 "$page_server" 2>/dev/null && return 0
		wait "$page_server" 2>/dev/null
	done
	die "criu page-server did not listen: $(tail -5 "$dir/dump/page-server.log")"
}

listening_or_gone() {
	ss -Hltn "sport = :$port" | grep -q . || ! kill -0 "$page_server" 2>/dev/null
}

# result_or_task_gone: the task wrote its result, or is dead (a zombie too).
result_or_task_gone() {
	test -e "$dir/result" || ! test -e "/proc/$task" ||
		grep -q '^State:[[:space:]]*Z' "/proc/$task/status" 2>/dev/null
}

# uffdd_cpu_ns: the CPU time uffdd's serving process has spent (its
# threads' schedstat), 0 without schedstat.
uffdd_cpu_ns() {
	local child
	child=$(pgrep -P "$daemon" | head -1)
	cat "/proc/${child:-$daemon}/task/"*/schedstat 2>/dev/null | awk '{ n += $1 } END { printf "%.0f", n }'
}

# settle: a pause before each restore but in --smoke.  A restore right
# after criu lazy-pages' 1 GiB one started up to 20 ms later, whichever
# server it was (seen here: 18-41 ms; 16-26 ms after uffdd's); 2 s later
# it did not, and in the old fixed order every remote uffdd restore came
# right after a local criu one.
settle() {
	[ $smoke = 1 ] || sleep 2
}

# restore SERVER SIGNAL WHERE: one lazy restore served by SERVER (uffdd or
# criu) from the images (WHERE local) or a page server (remote), the task
# told to read its pages by SIGNAL (USR1: seq, USR2: rand); sets start_ms,
# done_ms and cpu_ms (uffdd's CPU time until the last page was read).
restore() {
	local t0 t1 end st c0 remote=()
	settle
	rm -f "$dir/result" "$dir/work/lazy-pages.socket"
	if [ "$3" = remote ]; then
		start_page_server
		remote=(--page-server --address 127.0.0.1 --port "$port")
		[ "$1" = uffdd ] && remote+=("${fetch_all[@]}")
	fi
	if [ "$1" = uffdd ]; then
		"$LAZY_PAGES" -D "$dir/dump" -W "$dir/work" --socket "$sock" "${remote[@]}" \
			>"$dir/server.log" 2>&1 &
	else
		"$CRIU" lazy-pages -D "$dir/dump" -W "$dir/work" -o lazy-pages.log "${remote[@]}" \
			>"$dir/server.log" 2>&1 &
	fi
	server=$!
	poll test -S "$dir/work/lazy-pages.socket" ||
		die "$1: no lazy-pages.socket: $(cat "$dir/server.log")"
	# What lazy restore needs, asked before each restore whichever the
	# server.  Without it criu lazy-pages' own start (a criu that ran a
	# moment ago) made the next criu restore start 10-20 ms sooner than
	# after uffdd-lazy-pages: its kernel probes (kerndat, not cached where
	# /run is no tmpfs) ran faster within a second or two of another
	# criu's, so start_x measured that, not the server.
	"$CRIU" check --feature uffd-noncoop >/dev/null 2>&1 ||
		die "criu check --feature uffd-noncoop failed: no lazy restore here"
	c0=$(uffdd_cpu_ns)
	t0=$(date +%s%N)
	# --restore-sibling: the task is our child, reaped by this shell as
	# soon as it is killed (the next restore needs its pid free).
	"$CRIU" restore -D "$dir/dump" -W "$dir/work" --lazy-pages -d --restore-sibling \
		-o restore.log ||
		die "$1: criu restore failed: $(tail -5 "$dir/work/restore.log")"
	t1=$(date +%s%N)
	task=$pid
	kill -"$2" "$task"
	# A task left without its pages (a page server gone, say) dies of
	# SIGBUS: no wait for a result that cannot come.
	poll result_or_task_gone
	[ -e "$dir/result" ] ||
		die "$1 ($3): the restored task wrote no result (dead, or past the wait);" \
			"its lazy-pages server said: $(tail -5 "$dir/server.log")" \
			"${page_server:+; criu page-server said: $(tail -2 "$dir/dump/page-server.log")}"
	read -r st _ end _ <"$dir/result"
	cpu_ms=$((($(uffdd_cpu_ns) - c0) / 1000000))
	[ "$st" = ok ] || die "$1: the restored task read wrong pages: $(cat "$dir/result")"
	wait "$server" || die "$1: its lazy-pages server exited $?: $(tail -5 "$dir/server.log")"
	server=
	if [ -n "$page_server" ]; then
		wait "$page_server" ||
			die "$1: criu page-server exited $?: $(tail -5 "$dir/dump/page-server.log")"
		page_server=
	fi
	kill -KILL "$task"
	poll test ! -e "/proc/$task" || die "the restored task $task did not go"
	task=
	start_ms=$(((t1 - t0) / 1000000))
	done_ms=$(((end - t0) / 1000000))
}

# floor: one copy-floor of the dump's pages file, its ms added to $fl.
floor() {
	local f ms
	# The largest pages file: the task's (one task here).
	f=$(find "$dir/dump" -name 'pages-*.img' -printf '%s %p\n' | sort -n | tail -1)
	f=${f#* }
	ms=$("$FLOOR" "$f") || die "copy-floor $f failed"
	fl+=" $ms"
}

fl=
for k in "${!sizes[@]}"; do
	dump "${sizes[$k]}"
	# Per WHERE: the start times of both orders' runs, uffdd's and criu's.
	declare -A pu=() pc=()
	for order in seq rand; do
		sig=USR1
		[ $order = rand ] && sig=USR2
		# Per WHERE: start and done times of uffdd (su, du) and criu (sc,
		# dc), each a list of RUNS (word-split).
		declare -A su=() du=() sc=() dc=() cu=()
		for r in $(seq "$RUNS"); do
			[ $order = rand ] && floor
			for w in "${wheres[@]}"; do
				# criu first in every other run: each server
				# follows each as often (settle()).
				servers=(uffdd criu)
				[ $((r % 2)) = 0 ] && servers=(criu uffdd)
				for s in "${servers[@]}"; do
					restore "$s" $sig "$w"
					if [ "$s" = uffdd ]; then
						su[$w]+=" $start_ms" du[$w]+=" $done_ms" cu[$w]+=" $cpu_ms"
						pu[$w]+=" $start_ms"
					else
						sc[$w]+=" $start_ms" dc[$w]+=" $done_ms" pc[$w]+=" $start_ms"
					fi
				done
			done
		done
		for w in "${wheres[@]}"; do
			m=criu_${names[$k]}_${order}_$w
			# shellcheck disable=SC2086 # the lists are meant to split
			msu=$(median ${su[$w]}) mdu=$(median ${du[$w]}) msc=$(median ${sc[$w]}) mdc=$(median ${dc[$w]})
			echo "# $m: start ms uffdd${su[$w]}, criu${sc[$w]}; done ms uffdd${du[$w]}, criu${dc[$w]};" \
				"uffdd CPU ms${cu[$w]}"
			echo "metric ${m}_start_ms_uffdd $msu ms"
			echo "metric ${m}_start_ms_criu $msc ms"
			echo "metric ${m}_done_ms_uffdd $mdu ms"
			echo "metric ${m}_done_ms_criu $mdc ms"
			echo "metric ${m}_start_x $(ratio "$msu" "$msc") x"
			echo "metric ${m}_done_x $(ratio "$mdu" "$mdc") x"
		done
		if [ $order = rand ]; then
			m=criu_${names[$k]}_floor
			# shellcheck disable=SC2086 # the lists are meant to split
			mf=$(median $fl) mdc=$(median ${dc[local]})
			echo "# $m: ms$fl"
			echo "metric ${m}_ms $mf ms"
			echo "metric ${m}_x $(ratio "$mf" "$mdc") x"
			fl=
		fi
		unset su du sc dc cu
	done
	for w in "${wheres[@]}"; do
		m=criu_${names[$k]}_$w
		# shellcheck disable=SC2086 # the lists are meant to split
		msu=$(median ${pu[$w]}) msc=$(median ${pc[$w]})
		echo "# ${m}_start: ms uffdd${pu[$w]}, criu${pc[$w]}"
		echo "metric ${m}_start_ms_uffdd $msu ms"
		echo "metric ${m}_start_ms_criu $msc ms"
		echo "metric ${m}_start_x $(ratio "$msu" "$msc") x"
	done
	unset pu pc
	rm -rf "$dir"
done
[ -z "$remote_skip" ] || echo "skip: remote rows: $remote_skip"
