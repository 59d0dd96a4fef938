// SPDX-License-Identifier: MIT
/*
 * Firecracker's page-fault handler handshake.  A microVM restored with
 * `mem_backend: {backend_type: "Uffd", backend_path: SOCKET}` connects to
 * SOCKET (a --firecracker-socket, SOCK_STREAM) and sends one message: a JSON
 * array of its guest regions (base_host_virt_addr, size, offset into the
 * snapshot's memory file, page_size: 4 KiB, or 2 MiB for a guest of
 * hugetlbfs pages; releases before page_size sent page_size_kib, which
 * holds bytes too) with its userfaultfd attached
 * (SCM_RIGHTS; registered MISSING, with UFFD_FEATURE_EVENT_REMOVE for the
 * balloon).  It keeps the connection open while it runs and reads nothing
 * from it.  This file waits for that message, bounded in time, has fcmsg.c
 * read and check it, bounded in size, and makes a session of it as if a
 * client had sent Hello, the userfaultfd and a RegionAddBatch over the
 * --mem-file that the administrator paired with the socket: the VM never
 * names a file.  The message is peeked at (MSG_PEEK, SO_PEEK_OFF) and
 * taken off the connection only once the session made of it is committed
 * (STATE_FC_READY): a daemon that dies before leaves it there for its
 * successor.  From then on the session is served like any other.  A
 * guest_memfd VM (the newer variant: is_guest_memfd, three descriptors) is
 * checked and refused with fcgmem.c's reason.  When a served VM's session
 * ends, its working set is kept as runs of offsets in the memory file; a VM
 * restored next from the same file (device, inode, size, mtime: the same
 * snapshot) gets those runs replayed, in their order, before its faults'
 * readahead and the push (fcwset.c keeps them, in the fd store too: a
 * restarted daemon takes them back).  It owns the memory files; it may call
 * control.c, fcgmem.c, fcwset.c, fcmsg.c, session.c, finish.c, store.c,
 * log.c and util.c.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "uffdd.h"

static int mem_fd[UFFDD_FC_MAX];

int fc_init(void)
{
	char a[sizeof(((struct session *)0)->name)], b[sizeof(a)];

	for (unsigned int i = 0; i < uffdd_cfg.nfc; i++) {
		const char *path = uffdd_cfg.fc[i].mem_file;
		struct stat st;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			int err = errno;
			ulog(LOG_ERR, "--mem-file %s: %s", path, strerror(err));
			return -err;
		}
		if (!S_ISREG(st.st_mode)) {
			ulog(LOG_ERR, "--mem-file %s: not a regular file", path);
			close(fd);
			return -EINVAL;
		}
		mem_fd[i] = fd;
		/* A session finds its pair by name after a restart. */
		for (unsigned int j = 0; j < i; j++)
			if (!strcmp(fc_name(i, a, sizeof(a)), fc_name(j, b, sizeof(b)))) {
				ulog(LOG_ERR, "--firecracker-socket %s and %s: the same name (%s)",
				     uffdd_cfg.fc[j].socket, uffdd_cfg.fc[i].socket, a);
				return -EINVAL;
			}
	}
	return 0;
}

const char *fc_name(unsigned int i, char *buf, size_t size)
{
	snprintf(buf, size, "firecracker %s", uffdd_cfg.fc[i].socket);
	return buf;
}

/* The pair s's name says (-1: none configured now). */
static void find_pair(struct session *s)
{
	char name[sizeof(s->name)];

	s->fc_pair = -1;
	for (unsigned int i = 0; i < uffdd_cfg.nfc; i++)
		if (!strcmp(s->name, fc_name(i, name, sizeof(name))))
			s->fc_pair = (int)i;
}

void fc_accepted(struct session *s)
{
	find_pair(s);
	s->fc_deadline = uffdd_now_ns() + UFFDD_FC_HANDSHAKE_MS * 1000000ull;
	s->wsock.handle = fc_handle;
}

/* Refuse the handshake: one line, and the session ends (its connection
 * closed; the VM's faults are never served). */
static void refuse(struct session *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse(struct session *s, int err, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	slog(s, LOG_ERR, "Firecracker handshake (pid %d) refused: %s: %s", (int)s->pid, why,
	     strerror(-err));
	session_kill(s, "Firecracker handshake refused");
}

/* The userfaultfd's features, from the kernel's own account of it (its
 * fdinfo's API line); -EBADF when fd is no userfaultfd. */
static int uffd_features(int fd, uint64_t *ret)
{
	/* Set in the features shown once UFFDIO_API is done: not a feature. */
	const uint64_t initialized = 1ull << 31;
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	_cleanup_close_ int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return -errno;
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	unsigned long long api, features;
	const char *p = strstr(buf, "\nAPI:\t");
	if (!p || sscanf(p + 6, "%llx:%llx:", &api, &features) != 2)
		return -EBADF;
	*ret = features & ~initialized;
	return 0;
}

/*
 * A VM restored from the snapshot another VM left its working set for:
 * that set, recorded as this VM's too (its next VM's start), queued as a
 * Replay (its first slice placed now, before the VM's faults are read).
 */
static void replay_kept(struct session *s, const struct fc_map *v, size_t n)
{
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Replay rp = UFFDD__REPLAY__INIT;
	char why[200];
	size_t nr;
	_cleanup_free_ Uffdd__Range *rr = fcwset_ranges(mem_fd[s->fc_pair], v, n, &nr);
	_cleanup_free_ Uffdd__Range **rrp = rr ? calloc(nr, sizeof(*rrp)) : NULL;
	uint64_t bytes = 0;

	if (!rr)
		return;
	if (!rrp) {
		slog(s, LOG_WARNING, "no memory to replay the kept working set (%zu runs)", nr);
		return;
	}
	for (size_t i = 0; i < nr; i++) {
		rrp[i] = &rr[i];
		bytes += rr[i].len;
		session_record(s, rr[i].addr, rr[i].addr + rr[i].len);
	}
	rp.n_ranges = nr;
	rp.ranges = rrp;
	m.body_case = UFFDD__MSG__BODY_REPLAY;
	m.replay = &rp;
	slog(s, LOG_INFO,
	     "Firecracker VM (pid %d): replaying the working set the last VM of %s left: %zu "
	     "runs, %" PRIu64 " bytes",
	     (int)s->pid, uffdd_cfg.fc[s->fc_pair].mem_file, nr, bytes);
	if (control_request(s, &m, NULL, 0, why, sizeof(why)) < 0)
		slog(s, LOG_WARNING, "its working set is not replayed: %s", why);
}

void fc_ended(struct session *s)
{
	if (s->fc_pair >= 0)
		fcwset_keep(s, (unsigned int)s->fc_pair, mem_fd[s->fc_pair]);
}

void fc_wset_adopt(uint64_t number, int fd)
{
	char why[200] = "";
	int r = -ENOENT;

	if (number > uffdd_cfg.nfc)
		snprintf(why, sizeof(why), "%u --firecracker-socket pairs are configured",
			 uffdd_cfg.nfc);
	else
		r = fcwset_adopt((unsigned int)number - 1, mem_fd[number - 1], fd, why,
				 sizeof(why));
	if (r < 0)
		ulog(LOG_WARNING, "fd store: w%" PRIu64 ": %s; dropped", number, why);
	/* A name stored twice: dropping it would drop the one kept. */
	if (r < 0 && r != -EEXIST)
		store_remove("w%" PRIu64, number);
	close(fd);
}

/* Hello, the userfaultfd, the regions: as a client sends them. */
static int make_session(struct session *s, int uffd, const struct fc_map *v, size_t n,
			uint64_t page)
{
	int mfd = mem_fd[s->fc_pair];
	Uffdd__Msg m = UFFDD__MSG__INIT;
	Uffdd__Hello hello = UFFDD__HELLO__INIT;
	Uffdd__UffdHandover ho = UFFDD__UFFD_HANDOVER__INIT;
	Uffdd__RegionAddBatch batch = UFFDD__REGION_ADD_BATCH__INIT;
	char why[200];
	uint64_t features = 0;

	int r = uffd_features(uffd, &features);
	if (r < 0) {
		close(uffd);
		refuse(s, r, "the descriptor is not a userfaultfd");
		return r;
	}
	char name[sizeof(s->name)];
	snprintf(name, sizeof(name), "%s", s->name);
	hello.version = PIN_PROTO_VERSION;
	hello.name = name;
	m.body_case = UFFDD__MSG__BODY_HELLO;
	m.hello = &hello;
	r = control_request(s, &m, NULL, 0, why, sizeof(why));
	if (r < 0) {
		close(uffd);
		refuse(s, r, "Hello: %s", why);
		return r;
	}
	ho.features = features;
	m.body_case = UFFDD__MSG__BODY_UFFD;
	m.uffd = &ho;
	/* Handed over already by a daemon that died before the regions. */
	if (s->uffd)
		close(uffd);
	else
		r = control_request(s, &m, &uffd, 1, why, sizeof(why));
	if (r < 0) {
		refuse(s, r, "its userfaultfd: %s", why);
		return r;
	}
	Uffdd__RegionAdd *ra = calloc(n, sizeof(*ra));
	Uffdd__RegionAdd **rap = calloc(n, sizeof(*rap));
	Uffdd__Range *rr = calloc(n, sizeof(*rr));
	int fd = fcntl(mfd, F_DUPFD_CLOEXEC, 3);
	if (!ra || !rap || !rr || fd < 0) {
		r = fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			close(fd);
		refuse(s, r, "%zu regions", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uffdd__range__init(&rr[i]);
		rr[i].addr = v[i].addr;
		rr[i].len = v[i].len;
		uffdd__region_add__init(&ra[i]);
		ra[i].range = &rr[i];
		ra[i].mode = PIN_UFFD_REGISTER_MISSING;
		ra[i].source = UFFDD__SOURCE_KIND__SOURCE_FD;
		ra[i].has_offset = true;
		ra[i].offset = v[i].off;
		ra[i].has_page_size = true;
		ra[i].page_size = page;
		/* Firecracker registered them; the rest of each is pushed. */
		ra[i].has_registered = ra[i].has_push = true;
		ra[i].registered = ra[i].push = true;
		rap[i] = &ra[i];
	}
	batch.n_regions = n;
	batch.regions = rap;
	m.body_case = UFFDD__MSG__BODY_REGION_ADD_BATCH;
	m.region_add_batch = &batch;
	/* Served, in the same commit as the regions. */
	s->fc_ready = true;
	session_set_meta(s);
	r = control_request(s, &m, &fd, 1, why, sizeof(why));
	if (r < 0) {
		refuse(s, r, "its regions: %s", why);
		goto out;
	}
	slog(s, LOG_INFO, "Firecracker VM (pid %d): %zu regions from %s", (int)s->pid, n,
	     uffdd_cfg.fc[s->fc_pair].mem_file);
	replay_kept(s, v, n);
out:
	free(ra);
	free(rap);
	free(rr);
	return r;
}

/*
 * Take up to len bytes off the connection, and the descriptors with them
 * (closed): a handshake served, or what a dead daemon left of one.  The
 * bytes taken.
 */
static size_t take(struct session *s, size_t len)
{
	struct fcmsg m = { .buf = malloc(FC_MSG_MAX + 1) };
	size_t n = 0;

	if (!m.buf) {
		session_kill(s, "no memory to take its handshake off its connection");
		return 0;
	}
	int r = fcmsg_read(s->sock, &m, true);
	n = m.len;
	fcmsg_free(&m);
	if (r < 0) {
		slog(s, LOG_WARNING, "recvmsg: %s", strerror(-r));
		session_kill(s, "its connection failed");
	} else if (n > len) {
		slog(s, LOG_ERR, "Firecracker VM (pid %d) sent bytes after its handshake: ended",
		     (int)s->pid);
		session_kill(s, "bytes after its handshake");
	}
	return n;
}

void fc_taken_over(struct session *s)
{
	if (!s->fc_ready) {
		fc_accepted(s);
		return;
	}
	/* Its working set is kept for its pair's file when it ends. */
	find_pair(s);
	s->wsock.handle = fc_handle;
	size_t n = take(s, FC_MSG_MAX);
	if (n)
		slog(s, LOG_WARNING,
		     "dropped the %zu bytes of its handshake that a dead daemon served and did not "
		     "take off its connection",
		     n);
}

static void handshake(struct session *s)
{
	struct fcmsg m = { .buf = malloc(FC_MSG_MAX + 1) };
	struct fc_map *v = NULL;
	json_object *arr = NULL;
	struct stat st;
	char why[200];
	uint64_t page;
	bool gmem;
	size_t n;

	if (!m.buf) {
		refuse(s, -ENOMEM, "no memory for its message");
		return;
	}
	int r = fcmsg_read(s->sock, &m, false);
	if (r < 0) {
		refuse(s, r, "recvmsg");
		goto out;
	}
	if (!m.len && !m.nfds && !m.hup)
		goto out; /* woken for nothing */
	if (m.len > FC_MSG_MAX) {
		refuse(s, -EMSGSIZE, "a message over %d bytes", FC_MSG_MAX);
		goto out;
	}
	if (!m.len && m.hup) {
		refuse(s, -ECONNRESET, "it hung up before its handshake");
		goto out;
	}
	if (!m.len) {
		refuse(s, -EBADMSG, "an empty message");
		goto out;
	}
	if (m.nfds != 1 && m.nfds != FC_GMEM_FDS) {
		refuse(s, -EBADF,
		       "%zu descriptors; Firecracker sends its userfaultfd alone, or with its "
		       "guest_memfd and userfault bitmap",
		       m.nfds);
		goto out;
	}
	if (s->fc_pair < 0) {
		refuse(s, -ENOENT, "its --firecracker-socket is no longer configured");
		goto out;
	}
	r = fcmsg_parse(&m, &arr, why, sizeof(why));
	if (r < 0) {
		refuse(s, r, "%s", why);
		goto out;
	}
	if (fstat(mem_fd[s->fc_pair], &st) < 0) {
		r = -errno;
		refuse(s, r, "fstat(%s)", uffdd_cfg.fc[s->fc_pair].mem_file);
		goto out;
	}
	n = json_object_array_length(arr);
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		refuse(s, -ENOMEM, "%zu mappings", n);
		goto out;
	}
	r = fcmsg_check_maps(arr, (uint64_t)st.st_size, v, &n, &page, &gmem, why, sizeof(why));
	if (r < 0) {
		refuse(s, r, "%s", why);
		goto out;
	}
	if (gmem != (m.nfds == FC_GMEM_FDS)) {
		refuse(s, -EBADF, "%zu descriptors, and its mappings say \"is_guest_memfd\": %s",
		       m.nfds, gmem ? "true" : "false");
		goto out;
	}
	if (gmem) {
		uint64_t features;
		r = uffd_features(m.fds[0], &features);
		if (r < 0)
			refuse(s, r, "descriptor 0 is not a userfaultfd");
		else
			refuse(s, fcgmem_refusal(&m, v, n, page, why, sizeof(why)),
			       "a guest_memfd VM: %s", why);
		goto out;
	}
	s->fc_deadline = 0;
	m.nfds = 0;
	if (make_session(s, m.fds[0], v, n, page) == 0) {
		uffdd_hold("fc-served");
		take(s, m.len);
	}
out:
	json_object_put(arr);
	free(v);
	fcmsg_free(&m);
}

/* After the handshake Firecracker sends nothing; its connection closes when
 * it exits. */
static void after(struct session *s)
{
	char b[64];
	ssize_t n = recv(s->sock, b, sizeof(b), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		int err = errno;
		slog(s, LOG_WARNING, "recv: %s", strerror(err));
		session_kill(s, "its connection failed");
		return;
	}
	if (!n) {
		session_kill(s, "the VM's connection closed");
		return;
	}
	slog(s, LOG_ERR, "Firecracker VM (pid %d) sent bytes after its handshake: ended",
	     (int)s->pid);
	session_kill(s, "bytes after its handshake");
}

void fc_handle(struct session *s)
{
	if (s->dead || s->sock < 0)
		return;
	if (s->uffd)
		after(s);
	else
		handshake(s);
}
