#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: uffdctl-watch.sh UFFDD UFFDCTL RESTORE-WORKLOAD
# `uffdctl watch` on real lazy restores served by a uffdd (with its
# supervisor) on a temporary socket: restore A pushed to 100 % and restore B
# without push, both paused halfway through their pages.  Three frames into
# a pipe are exactly what the daemon's lists say (header, one line per
# session with its pid and 256 pages, the histogram `uffdctl stats` draws);
# in a pty, frames redrawn in place and fitted to its width and height;
# watch of one session survives a restart of the serving process and ends
# with status 0 when the session ends; SIGINT ends it with 0; a daemon gone
# for good with 1 and the hint.  77 when this user may not open a
# userfaultfd that takes kernel faults.
set -eu
uffdd=$1
ctl=$2
workload=$3
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ] &&
	[ ! -w /dev/userfaultfd ]; then
	echo "SKIP: this user may not open a userfaultfd (see README.md, Requirements)"
	exit 77
fi
command -v pgrep >/dev/null || { echo "SKIP: no pgrep to find uffdd's serving process"; exit 77; }
dir=$(mktemp -d)
sock=$dir/sock
daemon='' a='' b='' w=''
# shellcheck disable=SC2154 # p: the trap's own loop variable
trap 'for p in $w $a $b $daemon; do kill $p 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "uffdctl-watch: $*"
	exit 1
}
# What a program wrote to $1, without valgrind's lines.
own() {
	grep -v '^==[0-9]*==' "$1" || true
}
# until CMD...: run it every 10 ms until it succeeds, 10 s at most (scaled).
until_true() {
	i=0
	until "$@"; do
		i=$((i + 1))
		[ $i -lt $((1000 * ${TEST_TIME_SCALE:-1})) ] || return 1
		sleep 0.01
	done
}
# exited PID: the child PID is gone or a zombie.
exited() {
	! kill -0 "$1" 2>/dev/null || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ]
}
# exit_status PID: the child's exit status in $rc; 124 when it was still
# there after 10 s (scaled) and had to be killed.
exit_status() {
	until_true exited "$1" || kill -KILL "$1"
	rc=0
	wait "$1" || rc=$?
	[ $rc != 137 ] || rc=124
}
frames() {
	grep -c '^uffdd at ' "$1" 2>/dev/null || true
}
# start_watch ARGS...: uffdctl watch in the background, $w its pid; its
# output in w.out and w.err, made anew first: a file left from the last
# watch would show frames of that one.
start_watch() {
	rm -f "$dir/w.out" "$dir/w.err"
	"$ctl" --socket "$sock" watch "$@" >"$dir/w.out" 2>"$dir/w.err" &
	w=$!
}
more_frames_than() {
	[ "$(frames "$dir/w.out")" -gt "$1" ] 2>/dev/null
}
ctl_json() {
	"$ctl" --socket "$sock" --json "$@" >"$dir/json" || fail "'uffdctl --json $*' exits $?"
}

"$workload" checkpoint "$dir/ck" --mib 1 >/dev/null || fail "checkpoint exits $?"
"$uffdd" --socket "$sock" --workers 1 2>"$dir/log" &
daemon=$!
until_true "$ctl" --socket "$sock" status >/dev/null 2>&1 || fail "uffdd does not answer: $(cat "$dir/log")"
"$workload" restore "$dir/ck" --socket "$sock" --pause-ms 600000 >"$dir/a" 2>&1 &
a=$!
"$workload" restore "$dir/ck" --socket "$sock" --no-push --pause-ms 600000 >"$dir/b" 2>&1 &
b=$!

# A: every page pushed; B: paused, its pages as its faults left them.
settled() {
	grep -q '^paused_at_page' "$dir/a" && grep -q '^paused_at_page' "$dir/b" || return 1
	"$ctl" --socket "$sock" --json clients >"$dir/json" 2>/dev/null || return 1
	python3 - "$dir/json" "$a" "$b" <<'EOF'
import json, sys
d = {c["pid"]: c["stats"] for c in json.load(open(sys.argv[1]))}
a, b = int(sys.argv[2]), int(sys.argv[3])
sys.exit(0 if a in d and b in d and d[a]["pages_populated"] == d[a]["pages_total"] == 256 else 1)
EOF
}
until_true settled || fail "the restores did not reach their pause: $(cat "$dir/a" "$dir/b" "$dir/json")"

# --- three plain frames into a pipe ---------------------------------------------
{
	status=0
	"$ctl" --socket "$sock" watch --count 3 --interval 50 2>"$dir/err" || status=$?
	echo $status >"$dir/rc"
} | cat >"$dir/out"
[ "$(cat "$dir/rc")" = 0 ] || fail "watch --count 3 exits $(cat "$dir/rc"): $(cat "$dir/err")"
[ -z "$(own "$dir/err")" ] || fail "watch --count 3 says: $(cat "$dir/err")"
# Both restores sleep and B has no push: the lists and counters stand still.
ctl_json clients
cp "$dir/json" "$dir/clients.json"
"$ctl" --socket "$sock" stats >"$dir/stats" || fail "stats exits $?"
sed -n '/^latency/,$p' "$dir/stats" >"$dir/histogram"
grep -q '^latency (from the read' "$dir/histogram" || fail "B's faults drew no histogram: $(cat "$dir/stats")"
python3 - "$dir/clients.json" "$sock" "$a" "$b" "$dir/histogram" >"$dir/want" <<'EOF'
import json, sys
clients, sock, a, b = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
histogram = open(sys.argv[5]).read()
assert sorted(c["pid"] for c in clients) == sorted([a, b]), clients
clients.sort(key=lambda c: c["session"])
for frame in 1, 2, 3:
    if frame > 1:
        print()
    print(f"uffdd at {sock}: 2 sessions, every 50 ms, frame {frame} of 3")
    print(" SESS     PID NAME       PROGRESS                  PAGES PAGES/S  FAULTS RETRIES")
    for c in clients:
        s = c["stats"]
        pop, total = s["pages_populated"], s["pages_total"]
        assert total == 256, c
        bar = int(pop / total * 10 + 0.5)
        rate = "done" if pop == total else "-" if frame == 1 else "0"
        print("%5d %7d %-10.10s [%s] %5.1f%% %11s %7s %7d %7s" % (
            c["session"], c["pid"], c["name"], "#" * bar + "." * (10 - bar), 100.0 * pop / total,
            f"{pop}/{total}", rate, s["faults"], f"{s['eagain']}/{s['eexist']}"))
    print(histogram, end="")
EOF
cmp -s "$dir/want" "$dir/out" || {
	diff "$dir/want" "$dir/out" || true
	fail "watch --count 3: the frames above differ from the lists"
}
grep -q "100.0%     256/256    done" "$dir/out" || fail "no session at 100 %"
tail -n "$(($(wc -l <"$dir/histogram") + 3))" "$dir/out" | grep -q "^ *[0-9]* *$a restore-wo \[##########\] 100.0%     256/256    done " ||
	fail "the last frame does not show A ($a) at 100 %: $(cat "$dir/out")"
if grep -q "$(printf '\033')" "$dir/out"; then
	fail "escape sequences in plain frames"
fi

# --- on a terminal: redrawn in place, fitted to its width and height --------------
# In a pty of 100 columns: the name 16 wide, the bar 24 (what 60 columns of
# other fields leave); rows for both sessions, then one less: the sessions
# are counted instead.  SIGINT after the second frame: status 0.
hist=$(wc -l <"$dir/histogram")
for rows in $((hist + 5)) $((hist + 4)); do
	python3 - "$ctl" "$sock" "$rows" "$a" "$b" "${TEST_TIME_SCALE:-1}" <<'EOF' || fail "watch on a terminal of $rows rows: see above"
import os, pty, re, select, signal, struct, sys, time, fcntl, termios
ctl, sock, rows, a, b, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
pid, fd = pty.fork()
if pid == 0:
    os.execv(ctl, [ctl, "--socket", sock, "watch", "--interval", "50"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 100, 0, 0))
clear = b"\x1b[H\x1b[2J"
out, end = b"", time.time() + 10 * scale
def read(timeout):
    global out
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return False
    try:
        d = os.read(fd, 65536)
    except OSError:
        return False
    out += d
    return bool(d)
# Frames 1 and 2 whole: the third has begun.
while out.count(clear) < 3 and time.time() < end:
    read(0.1)
os.kill(pid, signal.SIGINT)
while read(1):
    pass
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
assert status == 0, f"watch exits {status} on SIGINT in a terminal"
frames = out.split(clear)
assert frames[0] == b"" and len(frames) >= 3, out
lines = frames[2].decode().split("\r\n")
assert lines[-1] == "", lines
lines = lines[:-1]
assert re.fullmatch(r"uffdd at .*: 2 sessions, every 50 ms, frame 2", lines[0]), lines
title = " SESS     PID NAME             PROGRESS                                PAGES PAGES/S  FAULTS RETRIES"
assert lines[1] == title, (lines[1], title)
sessions = [l for l in lines[2:] if re.match(r" *\d+ +\d+ restore-workload +\[", l)]
if len(lines) <= rows - 1 and len(sessions) == 2:
    assert all(len(l) == 100 for l in sessions), sessions
    assert any(f" {a} restore-workload [########################] 100.0%     256/256    done " in l for l in sessions), sessions
    assert any(f" {b} restore-workload [" in l for l in sessions), sessions
else:
    assert sessions == [] and lines[2] == "(2 more sessions)", lines
    assert len(lines) == rows - 1, (len(lines), rows)
print(f"rows {rows}: {len(sessions)} sessions shown")
EOF
done

# --- one session, across a restart of the serving process, to its end -------------
sb=$(python3 -c "import json, sys; print([c['session'] for c in json.load(open(sys.argv[1])) if c['pid'] == $b][0])" "$dir/clients.json")
start_watch "$sb" --interval 50
until_true more_frames_than 0 || fail "watch $sb drew no frame: $(cat "$dir/w.err")"
server=$(pgrep -P $daemon) || fail "no serving process under uffdd $daemon"
kill -KILL "$server"
restarted() {
	grep -q 'restarting it with' "$dir/log" && "$ctl" --socket "$sock" status >/dev/null 2>&1
}
until_true restarted || fail "uffdd did not restart: $(cat "$dir/log")"
n=$(frames "$dir/w.out")
until_true more_frames_than "$n" || fail "watch $sb drew nothing after the restart: $(cat "$dir/w.err")"
kill -0 $w 2>/dev/null || fail "watch $sb ended with the restart: $(cat "$dir/w.err")"
grep -q "^ *$sb *$b restore-wo " "$dir/w.out" || fail "watch $sb: no line of B ($b): $(cat "$dir/w.out")"
kill $b
wait $b 2>/dev/null || true
b=
exit_status $w
w=
[ $rc = 0 ] || fail "watch $sb exits $rc when its session ends, not 0: $(cat "$dir/w.err")"
[ "$(tail -n 1 "$dir/w.out")" = "session $sb ended" ] || fail "watch $sb ends with: $(tail -n 3 "$dir/w.out")"

# --- SIGINT: status 0, after a whole frame --------------------------------------------
start_watch --interval 50
until_true more_frames_than 0 || fail "watch drew no frame: $(cat "$dir/w.err")"
kill -INT $w
exit_status $w
w=
[ $rc = 0 ] || fail "watch exits $rc on SIGINT, not 0"
[ -z "$(own "$dir/w.err")" ] || fail "watch on SIGINT says: $(cat "$dir/w.err")"

# --- the daemon gone for good: status 1 and the hint ----------------------------------
start_watch --interval 50
until_true more_frames_than 0 || fail "watch drew no frame: $(cat "$dir/w.err")"
kill $daemon
wait $daemon 2>/dev/null || true
daemon=
exit_status $w
w=
[ $rc = 1 ] || fail "watch exits $rc when uffdd is gone, not 1"
cat >"$dir/want" <<EOF
uffdctl: uffdd is not running at $sock (no socket there)
uffdctl: \`systemctl status uffdd.socket uffdd.service\` says why; a uffdd started by hand listens where its --socket says: give uffdctl the same --socket, or set UFFDD_SOCKET
EOF
own "$dir/w.err" | cmp -s "$dir/want" - || fail "watch without uffdd says: $(cat "$dir/w.err")"

# shellcheck disable=SC2086 # $args: words
for args in "watch --json" "stats --count 2" "watch --interval 0" "watch --count 0" "watch x"; do
	rc=0; "$ctl" --socket "$sock" $args 2>/dev/null || rc=$?
	[ $rc = 2 ] || fail "'uffdctl $args' exits $rc, not 2"
done
kill $a 2>/dev/null || true
wait $a 2>/dev/null || true
a=
rm -rf "$dir"
trap - EXIT
exec echo "ok"
