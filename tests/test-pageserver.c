// SPDX-License-Identifier: MIT
/*
 * Suite unit, area pageserver: libpin's client of CRIU's page server
 * (libpin/pageserver.c, criu-remote.c) against a fake server on the other
 * end of a socketpair.  The fake server replays conversations recorded from
 * real CRIU 4.2 (tests/data/README.md), each of the client's bytes checked
 * against the recording, or plays a server of the test's own: one that
 * answers only once many GETs are in, one that answers the wrong pages, one
 * that never answers, one that serves the fixture dump's pages.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "libpin-private.h"
#include "test-common.h"

#define PG    4096ul
#define REG_A 0x7e0000000000ull
#define REG_B 0x7e0000800000ull
#define REG_D 0x7e0000c00000ull
/* The task of the fixture dump (/work/shared/criu-images/README.md). */
#define FIXTURE_PID 25997
/* The client's timeout where an answer comes: never reached. */
#define LONG_MS 10000
/* Where none comes: the wait the test makes. */
#define SHORT_MS 100

/* criu/page-xfer.c, as tests/data/record-page-server.py writes them. */
#define PS_IOV_ADD_F 6
#define PS_IOV_GET   7
#define PS_IOV_CLOSE 0x1023
#define PE_PRESENT   4

struct iov {
	uint32_t cmd;
	uint64_t nr_pages, vaddr, dst_id;
};

static char last_log[512];

static void capture_log(enum pin_log_level level, const char *msg, void *userdata)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* A fake server: a thread on sv[1], the client on sv[0]. */
struct fake {
	int sv[2];
	pthread_t thread;
	void *(*run)(void *);
	const char *recording; /* the replay's file */
	/* what it found */
	int result; /* 0: played its part; else the line of the first mismatch */
	size_t most_in_flight;
	struct pin_ps *ps;
};

#define FAKE_CHECK(f, cond)                                                                        \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			(f)->result = __LINE__;                                                    \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* Replay a recording: its 'C' records must come from the client byte for
 * byte, its 'S' records go back; then hang up. */
static void *replay(void *arg)
{
	struct fake *f = arg;
	FILE *rec = fopen(f->recording, "rb");
	unsigned char *want = NULL, *got = NULL;
	char dir;

	FAKE_CHECK(f, rec);
	while (fread(&dir, 1, 1, rec) == 1) {
		uint32_t len;

		FAKE_CHECK(f, fread(&len, sizeof(len), 1, rec) == 1);
		want = realloc(want, len);
		got = realloc(got, len);
		FAKE_CHECK(f, want && got && fread(want, 1, len, rec) == len);
		if (dir == 'C')
			FAKE_CHECK(f, test_read_all(f->sv[1], got, len) && !memcmp(got, want, len));
		else
			FAKE_CHECK(f, dir == 'S' && test_send_all(f->sv[1], want, len));
	}
out:
	free(want);
	free(got);
	if (rec)
		fclose(rec);
	close(f->sv[1]);
	return NULL;
}

static void fake_start(struct fake *f)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv), 0);
	ck_assert_int_eq(pin_ps_from_fd(f->sv[0], "fake", &f->ps), 0);
	ck_assert_int_eq(pthread_create(&f->thread, NULL, f->run, f), 0);
	pin_log_set(capture_log, NULL);
	last_log[0] = 0;
}

/* The fake's verdict, once the client is done with the connection. */
static int fake_end(struct fake *f)
{
	pin_ps_free(f->ps);
	ck_assert_int_eq(pthread_join(f->thread, NULL), 0);
	pin_log_set(NULL, NULL);
	return f->result;
}

static const char *data_path(const char *name)
{
	static char path[512];
	const char *dir = getenv("UFFDD_TEST_DATA");

	ck_assert_msg(dir, "UFFDD_TEST_DATA names tests/data (meson sets it)");
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

/* Every word of the n pages at buf holds the fixture's pattern for addr. */
static void check_pattern(const void *buf, uint64_t addr, uint64_t n)
{
	const uint64_t *w = buf;

	for (size_t k = 0; k < n * PG / 8; k++)
		if (w[k] != test_pattern(addr + 8 * k, 0))
			ck_abort_msg("word at 0x%llx is 0x%llx, expected 0x%llx",
				     (unsigned long long)(addr + 8 * k), (unsigned long long)w[k],
				     (unsigned long long)test_pattern(addr + 8 * k, 0));
}

/* Recorded from `criu page-server --lazy-pages` over the fixture dump: four
 * GETs out at once, the third answered short (2 of 4 pages: the end of a
 * buffer of CRIU's page pipe) and its rest asked again, then CLOSE. */
START_TEST(replay_fixture)
{
	static unsigned char a0[4 * PG], a1[4 * PG], a2[4 * PG], d[16 * PG];
	const struct pin_ps_range r[] = {
		{ REG_A, 4, a0 },
		{ REG_A + 0xf9000, 4, a1 },
		{ REG_A + 0x3f9000, 4, a2 },
		{ REG_D, 16, d },
	};
	struct fake f = { .run = replay, .recording = data_path("page-server-fixture.rec") };

	fake_start(&f);
	ck_assert_int_eq(pin_ps_fetch(f.ps, FIXTURE_PID, r, 4, LONG_MS), 0);
	ck_assert_int_eq(pin_ps_close(f.ps, LONG_MS), 0);
	ck_assert_int_eq(fake_end(&f), 0);
	for (size_t i = 0; i < 4; i++)
		check_pattern(r[i].buf, r[i].addr, r[i].nr_pages);
}
END_TEST

/* Recorded: a GET of region B's pages 0 and 1 (only the even pages hold
 * data) is answered with page 0; the rest, page 1, holds nothing there and
 * the server hangs up. */
START_TEST(replay_hangup)
{
	static unsigned char b[2 * PG];
	const struct pin_ps_range r = { REG_B, 2, b };
	struct fake f = { .run = replay, .recording = data_path("page-server-hangup.rec") };

	fake_start(&f);
	ck_assert_int_eq(pin_ps_fetch(f.ps, FIXTURE_PID, &r, 1, LONG_MS), -ECONNRESET);
	ck_assert_msg(strstr(last_log, "GET task 25997 [0x7e0000801000, 0x7e0000802000)") &&
			      strstr(last_log, "closed the connection"),
		      "log: %s", last_log);
	ck_assert_int_eq(fake_end(&f), 0);
	check_pattern(b, REG_B, 1);
}
END_TEST

/* A server that answers nothing until it holds its window's worth of GETs,
 * then one page for each: a client that waited for each answer before the
 * next GET would never get one. */
#define WINDOW 64 /* libpin's GETS_IN_FLIGHT */
#define NGETS  (3 * WINDOW)

static void *answer_late(void *arg)
{
	struct fake *f = arg;
	static unsigned char page[PG];
	struct iov q[NGETS];
	size_t in = 0, out = 0;

	while (out < NGETS) {
		/* No answer while fewer than a window's worth are unanswered. */
		if (in < NGETS && in - out < WINDOW) {
			FAKE_CHECK(f, test_read_all(f->sv[1], &q[in], sizeof(q[in])));
			FAKE_CHECK(f, q[in].cmd == PS_IOV_GET && q[in].nr_pages == 1 &&
					      q[in].dst_id == 7 &&
					      q[in].vaddr == REG_A + in * 2 * PG);
			in++;
			if (in - out > f->most_in_flight)
				f->most_in_flight = in - out;
			continue;
		}
		q[out].cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
		memset(page, (int)(out & 0xff), sizeof(page));
		FAKE_CHECK(f, test_send_all(f->sv[1], &q[out], sizeof(q[out])) &&
				      test_send_all(f->sv[1], page, sizeof(page)));
		out++;
	}
out:
	close(f->sv[1]);
	return NULL;
}

START_TEST(many_in_flight)
{
	static unsigned char buf[NGETS * PG];
	static struct pin_ps_range r[NGETS];
	struct fake f = { .run = answer_late };

	for (size_t i = 0; i < NGETS; i++)
		r[i] = (struct pin_ps_range){ REG_A + i * 2 * PG, 1, buf + i * PG };
	fake_start(&f);
	ck_assert_int_eq(pin_ps_fetch(f.ps, 7, r, NGETS, LONG_MS), 0);
	ck_assert_int_eq(fake_end(&f), 0);
	ck_assert_uint_eq(f.most_in_flight, WINDOW);
	for (size_t i = 0; i < NGETS; i++)
		for (size_t k = 0; k < PG; k++)
			if (buf[i * PG + k] != (i & 0xff))
				ck_abort_msg("page %zu byte %zu is %u", i, k, buf[i * PG + k]);
}
END_TEST

/* A server that answers a GET with pages it was not asked for. */
static void *answer_wrong(void *arg)
{
	struct fake *f = arg;
	struct iov q;

	FAKE_CHECK(f, test_read_all(f->sv[1], &q, sizeof(q)));
	q.cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
	q.vaddr += PG;
	FAKE_CHECK(f, test_send_all(f->sv[1], &q, sizeof(q)));
	/* Wait for the client's hang-up. */
	FAKE_CHECK(f, !test_read_all(f->sv[1], &q, sizeof(q)));
out:
	close(f->sv[1]);
	return NULL;
}

START_TEST(wrong_answer)
{
	static unsigned char buf[2 * PG];
	const struct pin_ps_range r = { REG_A, 2, buf };
	struct fake f = { .run = answer_wrong };

	fake_start(&f);
	ck_assert_int_eq(pin_ps_fetch(f.ps, 9, &r, 1, LONG_MS), -EBADMSG);
	ck_assert_msg(strstr(last_log, "GET task 9 [0x7e0000000000, 0x7e0000002000): answered "
				       "cmd 0x40006 task 9 0x7e0000001000 2 pages"),
		      "log: %s", last_log);
	ck_assert_int_eq(fake_end(&f), 0);
}
END_TEST

/* A server that takes the GET and says nothing. */
static void *answer_never(void *arg)
{
	struct fake *f = arg;
	struct iov q;

	FAKE_CHECK(f, test_read_all(f->sv[1], &q, sizeof(q)));
	FAKE_CHECK(f, !test_read_all(f->sv[1], &q, sizeof(q)));
out:
	close(f->sv[1]);
	return NULL;
}

START_TEST(no_answer)
{
	static unsigned char buf[PG];
	const struct pin_ps_range r = { REG_D, 1, buf };
	struct fake f = { .run = answer_never };

	fake_start(&f);
	ck_assert_int_eq(pin_ps_fetch(f.ps, 3, &r, 1, SHORT_MS), -ETIMEDOUT);
	ck_assert_msg(strstr(last_log, "GET task 3 [0x7e0000c00000, 0x7e0000c01000): no answer"),
		      "log: %s", last_log);
	ck_assert_int_eq(fake_end(&f), 0);
}
END_TEST

/* CLOSE answered with a status not 0. */
static void *close_refused(void *arg)
{
	struct fake *f = arg;
	int32_t status = 1;
	struct iov q;

	FAKE_CHECK(f, test_read_all(f->sv[1], &q, sizeof(q)) && q.cmd == PS_IOV_CLOSE);
	FAKE_CHECK(f, test_send_all(f->sv[1], &status, sizeof(status)));
out:
	close(f->sv[1]);
	return NULL;
}

START_TEST(close_status)
{
	struct fake f = { .run = close_refused };

	fake_start(&f);
	ck_assert_int_eq(pin_ps_close(f.ps, LONG_MS), -EPROTO);
	ck_assert_msg(strstr(last_log, "close: status 1"), "log: %s", last_log);
	ck_assert_int_eq(fake_end(&f), 0);
}
END_TEST

/* A page server over the fixture dump: each GET answered with at most 5
 * pages (shorter answers than asked, as CRIU's at its buffers' ends), read
 * from the dump. */
static struct pin_image *served;

static void *serve_fixture(void *arg)
{
	struct fake *f = arg;
	static unsigned char pages[5 * PG];
	struct iov q;

	while (test_read_all(f->sv[1], &q, sizeof(q))) {
		FAKE_CHECK(f, q.cmd == PS_IOV_GET && q.dst_id == FIXTURE_PID && q.nr_pages);
		if (q.nr_pages > 5)
			q.nr_pages = 5;
		FAKE_CHECK(f, pin_image_read(served, q.vaddr, pages, q.nr_pages * PG) == 0);
		q.cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
		FAKE_CHECK(f, test_send_all(f->sv[1], &q, sizeof(q)) &&
				      test_send_all(f->sv[1], pages, q.nr_pages * PG));
	}
out:
	close(f->sv[1]);
	return NULL;
}

/* The fixture's image with its lazy pages from the server reads exactly as
 * the local one, from a sealed memfd. */
START_TEST(remote_image)
{
	char dir[512];
	struct pin_image *img;
	struct fake f = { .run = serve_fixture };
	static unsigned char want[64 * PG], got[64 * PG];

	snprintf(dir, sizeof(dir), "%s/fixture", getenv("UFFDD_CRIU_IMAGES"));
	ck_assert_int_eq(pin_image_open_criu(dir, FIXTURE_PID, &served), 0);
	fake_start(&f);
	ck_assert_int_eq(pin_image_open_criu_remote(dir, FIXTURE_PID, f.ps, LONG_MS, &img), 0);
	ck_assert_int_eq(fake_end(&f), 0);
	ck_assert_uint_eq(pin_image_nr_regions(img), pin_image_nr_regions(served));
	for (size_t i = 0; i < pin_image_nr_regions(img); i++) {
		const struct pin_image_region *g = pin_image_region(img, i);

		ck_assert_uint_eq(g->addr, pin_image_region(served, i)->addr);
		ck_assert_uint_eq(g->len, pin_image_region(served, i)->len);
		for (uint64_t a = g->addr; a < g->addr + g->len; a += sizeof(got)) {
			size_t n = g->addr + g->len - a < sizeof(got) ? g->addr + g->len - a
								      : sizeof(got);

			ck_assert_int_eq(pin_image_read(served, a, want, n), 0);
			ck_assert_int_eq(pin_image_read(img, a, got, n), 0);
			ck_assert_msg(!memcmp(want, got, n), "region at 0x%llx differs at 0x%llx",
				      (unsigned long long)g->addr, (unsigned long long)a);
		}
	}
	ck_assert_int_eq(fcntl(pin_image_pages_fd(img), F_GET_SEALS),
			 F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	pin_image_free(img);
	pin_image_free(served);
}
END_TEST

Suite *test_suite(void)
{
	Suite *s = test_suite_new("pageserver");
	const struct test_needs images = { .path_env = "UFFDD_CRIU_IMAGES" };
	TCase *tc = test_tcase(s, "protocol", &(struct test_needs){ 0 });

	/* A client's wait (LONG_MS) ends before the tcase's. */
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, replay_fixture);
	tcase_add_test(tc, replay_hangup);
	tcase_add_test(tc, many_in_flight);
	tcase_add_test(tc, wrong_answer);
	tcase_add_test(tc, no_answer);
	tcase_add_test(tc, close_status);
	tc = test_tcase(s, "image", &images);
	tcase_add_test(tc, remote_image);
	return s;
}

const char *test_skip_reason(void)
{
	if (sysconf(_SC_PAGESIZE) != (long)PG)
		return "the recordings hold 4 KiB pages; this machine's page size differs";
	return NULL;
}
