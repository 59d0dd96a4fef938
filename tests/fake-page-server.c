// SPDX-License-Identifier: MIT
/* A page server of CRIU's played from a dump's images (fake-page-server.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake-page-server.h"
#include "libpin-private.h"
#include "test-common.h"

/* criu/page-xfer.c */
#define PS_IOV_ADD_F 6
#define PS_IOV_GET   7
#define PS_IOV_CLOSE 0x1023
#define PE_PRESENT   4

#define MAX_TASKS 8

struct iov {
	uint32_t cmd;
	uint64_t nr_pages, vaddr, dst_id;
};

struct server {
	const char *dump;
	int sk;
	uint64_t max_pages, page, served;
	int pids[MAX_TASKS];
	struct pin_image *imgs[MAX_TASKS];
	size_t ntasks;
	char why[256];
};

static struct pin_image *task_image(struct server *s, int pid)
{
	for (size_t i = 0; i < s->ntasks; i++)
		if (s->pids[i] == pid)
			return s->imgs[i];
	if (s->ntasks == MAX_TASKS || pin_image_open_criu(s->dump, pid, &s->imgs[s->ntasks]) < 0)
		return NULL;
	s->pids[s->ntasks] = pid;
	return s->imgs[s->ntasks++];
}

/* Whether the page at addr is one of the image's PE_LAZY pages. */
static bool lazy_page(const struct pin_image *img, uint64_t addr)
{
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		for (size_t k = 0; k < g->nr_segments; k++) {
			const struct pin_image_segment *sg = &g->segments[k];

			if (addr >= sg->addr && addr < sg->addr + sg->len)
				return sg->flags & PIN_IMAGE_SEG_LAZY;
		}
	}
	return false;
}

/* One GET: 0, or -1 with s->why. */
static int get(struct server *s, struct iov *q)
{
	struct pin_image *img = task_image(s, (int)q->dst_id);
	unsigned char *buf;
	int r;

	if (!img) {
		snprintf(s->why, sizeof(s->why), "GET of task %llu: no such task in the dump",
			 (unsigned long long)q->dst_id);
		return -1;
	}
	if (!q->nr_pages) {
		snprintf(s->why, sizeof(s->why), "GET of no page");
		return -1;
	}
	if (q->nr_pages > s->max_pages)
		q->nr_pages = s->max_pages;
	for (uint64_t k = 0; k < q->nr_pages; k++)
		if (!lazy_page(img, q->vaddr + k * s->page)) {
			snprintf(s->why, sizeof(s->why),
				 "GET of task %llu page 0x%llx: not a PE_LAZY page (CRIU hangs up)",
				 (unsigned long long)q->dst_id,
				 (unsigned long long)(q->vaddr + k * s->page));
			return -1;
		}
	buf = malloc(q->nr_pages * s->page);
	if (!buf)
		return -1;
	r = pin_image_read(img, q->vaddr, buf, q->nr_pages * s->page);
	q->cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
	if (r < 0 || !test_send_all(s->sk, q, sizeof(*q)) ||
	    !test_send_all(s->sk, buf, q->nr_pages * s->page)) {
		snprintf(s->why, sizeof(s->why), "answering a GET of task %llu at 0x%llx failed",
			 (unsigned long long)q->dst_id, (unsigned long long)q->vaddr);
		r = -1;
	}
	free(buf);
	s->served += q->nr_pages;
	return r < 0 ? -1 : 0;
}

/* The session, as page_server_serve() runs it: 0 after CLOSE and the
 * client's hang-up, else -1 with s->why. */
static int serve(struct server *s)
{
	struct iov q;
	int32_t status = 0;
	char c;

	for (;;) {
		memset(&q, 0, sizeof(q));
		if (!test_read_all(s->sk, &q, sizeof(q))) {
			snprintf(s->why, sizeof(s->why), "the client hung up without PS_IOV_CLOSE");
			return -1;
		}
		if (q.cmd == PS_IOV_CLOSE)
			break;
		if (q.cmd != PS_IOV_GET) {
			snprintf(s->why, sizeof(s->why), "command 0x%x", q.cmd);
			return -1;
		}
		if (get(s, &q) < 0)
			return -1;
	}
	if (!test_send_all(s->sk, &status, sizeof(status)) || read(s->sk, &c, 1) != 0) {
		snprintf(s->why, sizeof(s->why), "after CLOSE: no hang-up");
		return -1;
	}
	return 0;
}

void fake_ps_start(struct fake_ps *ps, const char *dump, uint64_t max_pages)
{
	int lsk = test_listen_loopback(&ps->port), p[2];

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	ps->pid = fork();
	ck_assert_int_ge(ps->pid, 0);
	if (ps->pid == 0) {
		struct server s = { .dump = dump,
				    .max_pages = max_pages,
				    .page = (uint64_t)sysconf(_SC_PAGESIZE) };
		char report[300];
		int r, one = 1;

		close(p[0]);
		s.sk = accept4(lsk, NULL, NULL, SOCK_CLOEXEC);
		/* As CRIU's page_server_serve(): an answer's header and pages go
		 * out at once (with Nagle the pages would wait for the header's
		 * delayed ACK, 40 ms an answer while one GET is in flight). */
		if (s.sk >= 0 && setsockopt(s.sk, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			snprintf(s.why, sizeof(s.why), "TCP_NODELAY: %s", strerror(errno));
		r = s.sk < 0 || s.why[0] ? -1 : serve(&s);
		if (s.sk < 0)
			snprintf(s.why, sizeof(s.why), "accept: %s", strerror(errno));
		snprintf(report, sizeof(report), "%ld %s", r < 0 ? -1L : (long)s.served, s.why);
		for (size_t i = 0; i < s.ntasks; i++)
			pin_image_free(s.imgs[i]);
		_exit(write(p[1], report, strlen(report) + 1) > 0 ? 0 : 1);
	}
	close(lsk);
	close(p[1]);
	ps->report = p[0];
}

long fake_ps_end(struct fake_ps *ps, char *why, size_t len)
{
	char report[300] = "";
	long served = -1;
	int st, n = 0;

	ck_assert_int_ge(read(ps->report, report, sizeof(report) - 1), 0);
	close(ps->report);
	ck_assert_int_eq(waitpid(ps->pid, &st, 0), ps->pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the fake page server failed");
	if (sscanf(report, "%ld %n", &served, &n) < 1)
		snprintf(why, len, "no report");
	else
		snprintf(why, len, "%s", report + n);
	return served;
}
