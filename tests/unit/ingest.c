/*
 * tests/unit/ingest.c - the fd -> spool -> parser -> image pipeline: a
 * whole stream from a file becomes the image with every page, the owner
 * is woken and sees bytes, pages, the machine type; a truncated stream is
 * incomplete but no failure; garbage is a failure that wakes the owner; a
 * stop while the sender is silent returns at once; an existing image path
 * is refused; NULL handles read as "nothing yet".  All but the last run
 * twice: through the spool and direct (the parser's thread reads the fd).
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest.h"
#include "save.h"
#include "streamgen.h"
#include "util.h"
#include "tap.h"

#define PAGE 4096u
#define NPAGES 300u

static const uint8_t config[] = {
	0x07, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5', '-', '7', '.', '2',
};
static const uint8_t tail[] = { 0x04, 1, 2, 3, 0x7e, 0, 0, 0, 9, 0,
	0x06, 0, 0, 0, 2, '{', '}' };

static char *tmpdir;
static int direct;	/* this round's ingest_opts.direct */

static int
mem_write(void *opaque, const void *p, size_t len, struct err *e)
{
	buf_add(opaque, p, len);
	return 0;
}

static void
fill(uint8_t *page, uint64_t pg, int pass)
{
	size_t i;

	for (i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(pg * 31 + (uint64_t)pass * 7 + i / 64);
}

/* Two passes over NPAGES pages (every third one zero), then the end. */
static void
make_stream(struct buf *out)
{
	struct stream_block b[1] = { { "pc.ram", NPAGES * PAGE, 0, 0 } };
	struct stream_writer *w = stream_writer_new(mem_write, out);
	struct err e = ERR_INIT;
	uint8_t page[PAGE];
	uint64_t pg;
	int pass, rc;

	rc = stream_writer_begin(w, config, sizeof(config), b, 1, 7, &e);
	for (pass = 0; pass < 2; pass++) {
		for (pg = 0; pg < NPAGES; pg++) {
			fill(page, pg, pass);
			rc |= stream_writer_page(w, 0, pg * PAGE,
			    pg % 3 == 0 ? NULL : page, &e);
		}
	}
	rc |= stream_writer_finish(w, 1, tail, sizeof(tail), &e);
	if (rc != 0) {
		fprintf(stderr, "cannot make the stream: %s\n", e.msg);
		exit(1);
	}
	stream_writer_free(w);
}

static int
file_of(const char *name, const void *p, size_t len)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w+");
	int fd;

	if (f == NULL || fwrite(p, 1, len, f) != len || fflush(f) != 0)
		exit(1);
	fd = dup(fileno(f));
	fclose(f);
	lseek(fd, 0, SEEK_SET);
	free(path);
	return fd;
}

/* Poll the wake fd until the threads are done; how many wakeups. */
static int
wait_finished(struct ingest *g)
{
	struct pollfd pfd;
	int wakes = 0, i;

	for (i = 0; i < 1000 && !ingest_finished(g); i++) {
		pfd.fd = ingest_wake_fd(g);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) > 0)
			wakes++;
		ingest_wake_clear(g);
	}
	return wakes;
}

static void
test_whole(const struct buf *s)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct err e = ERR_INIT;
	struct img_stats st;
	struct img_reader *r;
	struct ingest *g;
	char *path = xasprintf("%s/whole%d.img", tmpdir, direct);
	uint8_t page[PAGE], want[PAGE];
	enum img_page_state state;
	uint64_t pg;
	int fd = file_of("whole.raw", s->data, s->len), bad = 0, wakes, rc;

	o.img.threads = 2;
	o.direct = direct;
	g = ingest_new(path, &o, &e);
	check(g != NULL, "ingest_new: %s", e.msg);
	check(ingest_start(g, fd, &e) == 0, "ingest_start: %s", e.msg);
	wakes = wait_finished(g);
	check(ingest_finished(g) && wakes >= 1, "the owner is woken (%d "
	    "times) and sees the end", wakes);
	ingest_stop(g);
	check(ingest_check(g, &e) == 0 && ingest_result(g, &e) == 0,
	    "a whole stream is complete: %s", e.msg);
	check(ingest_bytes(g) == s->len, "every byte was read (%llu of %zu)",
	    (unsigned long long)ingest_bytes(g), s->len);
	check(ingest_pages(g) == 2 * NPAGES, "every page record counted "
	    "(%llu)", (unsigned long long)ingest_pages(g));
	check(strcmp(ingest_machine(g), "pc-q35-7.2") == 0, "machine '%s'",
	    ingest_machine(g));
	memset(&st, 0, sizeof(st));
	rc = ingest_commit(g, &st, &e);
	check(rc == 0 && st.pages == NPAGES, "commit: %llu pages %s",
	    (unsigned long long)st.pages, e.msg);
	ingest_free(g);
	close(fd);

	r = img_open(path, &e);
	check(r != NULL, "the image opens: %s", e.msg);
	for (pg = 0; r != NULL && pg < NPAGES; pg++) {
		fill(want, pg, 1);
		if (img_read_page(r, 0, pg * PAGE, page, &state, &e) < 0 ||
		    state != (pg % 3 == 0 ? IMG_PAGE_ZERO : IMG_PAGE_DATA) ||
		    (pg % 3 != 0 && memcmp(page, want, PAGE) != 0))
			bad++;
	}
	check(r != NULL && bad == 0, "every page is the last pass's (%d bad)",
	    bad);
	img_close(r);
	free(path);
}

static void
test_truncated(const struct buf *s)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct err e = ERR_INIT;
	struct ingest *g;
	char *path = xasprintf("%s/cut%d.img", tmpdir, direct);
	int fd = file_of("cut.raw", s->data, s->len / 2);

	o.direct = direct;
	g = ingest_new(path, &o, &e);
	check(g != NULL && ingest_start(g, fd, &e) == 0, "start: %s", e.msg);
	wait_finished(g);
	ingest_stop(g);
	check(ingest_check(g, &e) == 0, "a truncated stream is no failure");
	check(ingest_result(g, &e) < 0 && strstr(e.msg, "truncated") != NULL,
	    "... but incomplete: %s", e.msg);
	ingest_free(g);
	close(fd);
	check(access(path, F_OK) < 0, "no image is left");
	free(path);
}

static void
test_garbage(void)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct err e = ERR_INIT;
	struct ingest *g;
	struct pollfd pfd;
	char *path = xasprintf("%s/bad%d.img", tmpdir, direct);
	static const char junk[] = "this is not a migration stream";
	int fd = file_of("bad.raw", junk, sizeof(junk));

	o.direct = direct;
	g = ingest_new(path, &o, &e);
	check(g != NULL && ingest_start(g, fd, &e) == 0, "start: %s", e.msg);
	pfd.fd = ingest_wake_fd(g);
	pfd.events = POLLIN;
	check(poll(&pfd, 1, 10000) == 1, "a failure wakes the owner");
	wait_finished(g);
	check(ingest_check(g, &e) < 0 && e.kind == ERR_FAIL,
	    "garbage is a failure: %s", e.msg);
	ingest_free(g);
	close(fd);
	free(path);
}

static void
test_stop_silent(void)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct err e = ERR_INIT;
	struct ingest *g;
	char *path = xasprintf("%s/silent%d.img", tmpdir, direct);
	uint64_t t0;
	int p[2];

	if (pipe(p) < 0)
		exit(1);
	o.spool_dir = tmpdir;
	o.spool_file_max = 1 << 20;
	o.direct = direct;
	g = ingest_new(path, &o, &e);
	check(g != NULL && ingest_start(g, p[0], &e) == 0, "start: %s",
	    e.msg);
	ingest_overflow(g, 1);
	if (write(p[1], "QEVM", 4) != 4)
		exit(1);
	usleep(100000);
	check(!ingest_finished(g) && ingest_bytes(g) == 4,
	    "a silent sender: 4 bytes read, not finished");
	t0 = now_mono_ms();
	ingest_stop(g);
	check(now_mono_ms() - t0 < 2000, "stop returns at once (%llu ms)",
	    (unsigned long long)(now_mono_ms() - t0));
	check(ingest_check(g, &e) == 0 && ingest_result(g, &e) < 0,
	    "a stopped stream is incomplete: %s", e.msg);
	ingest_free(g);
	close(p[0]);
	close(p[1]);
	free(path);
}

static void
test_refused(void)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct err e = ERR_INIT;
	char *path = xasprintf("%s/whole0.img", tmpdir);

	check(ingest_new(path, &o, &e) == NULL && e.kind == ERR_FAIL,
	    "an existing image path is refused: %s", e.msg);
	check(ingest_bytes(NULL) == 0 && ingest_pages(NULL) == 0 &&
	    ingest_pending(NULL) == 0 && ingest_check(NULL, &e) == 0 &&
	    !ingest_finished(NULL) && ingest_wake_fd(NULL) == -1,
	    "a NULL ingest reads as nothing yet");
	ingest_overflow(NULL, 1);
	ingest_wake_clear(NULL);
	ingest_stop(NULL);
	ingest_free(NULL);
	free(path);
}

int
main(void)
{
	struct buf s = BUF_INIT;
	char tmpl[] = "/tmp/snapctl-unit-ingest-XXXXXX";
	char *cmd;

	if ((tmpdir = mkdtemp(tmpl)) == NULL)
		return 1;
	make_stream(&s);
	for (direct = 0; direct <= 1; direct++) {
		note("%s", direct ? "direct: the parser reads the fd" :
		    "through the spool");
		test_whole(&s);
		test_truncated(&s);
		test_garbage();
		test_stop_silent();
	}
	test_refused();
	buf_release(&s);
	cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		note("cannot remove %s", tmpdir);
	free(cmd);
	return tap_done();
}
