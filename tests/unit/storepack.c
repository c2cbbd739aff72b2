/*
 * tests/unit/storepack.c - the store's pack GC (storepack.h) must free
 * less, never more: a pack file whose id is also a live checkpoint's
 * (a copied checkpoint directory) is punched by the GC using only the
 * references of that moment; a later checkpoint based on the live copy
 * names frames the punched file lacks, and deleting the live copy then
 * accepts the punched file as "an equal copy" (storepack_keep) -- the
 * later image reads holes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "save.h"
#include "store.h"
#include "storepack.h"
#include "util.h"
#include "tap.h"

#include "synthguest.h"


/* Every page of path, read through the reader (packs found beside). */
static int
same_pages(const struct guest *g, const char *path, const char *what)
{
	struct err e = ERR_INIT;
	struct img_reader *r = img_open_finder(path, NULL, &e);
	enum img_page_state state;
	uint8_t got[PAGE], want[PAGE];
	size_t pg;
	uint32_t b;
	int bad = 0;

	if (!check(r != NULL, "%s: opens with its packs (%s)", what, e.msg))
		return 0;
	for (pg = 0; pg < NPAGES && !bad; pg++) {
		b = pg < NCHUNK * CPAGES ? 0 : 1;
		if (b == 1 && (pg - NCHUNK * CPAGES) * PAGE >= g->vga_len)
			break;
		if (img_read_page(r, b, (pg - (b ? NCHUNK * CPAGES : 0)) *
		    PAGE, got, &state, &e) < 0) {
			note("page %zu: %s", pg, e.msg);
			bad = 1;
			break;
		}
		if (g->seed[pg] == 0) {
			memset(want, 0, PAGE);
			bad = state != IMG_PAGE_ZERO;
		} else {
			fill(want, g->seed[pg]);
			bad = state != IMG_PAGE_DATA;
		}
		if (memcmp(got, want, PAGE) != 0)
			bad = 1;
		if (bad)
			note("page %zu differs (state %d)", pg, state);
	}
	check(!bad, "%s: every page equals the guest's newest", what);
	if (!bad) {
		err_clear(&e);
		check(img_verify(r, &e) == 0, "%s: verifies (%s)", what,
		    e.msg);
	}
	img_close(r);
	return !bad;
}


static void
test_copied_checkpoint(void)
{
	struct guest *g = xcalloc(1, sizeof(*g)), *g2 = xcalloc(1, sizeof(*g2));
	struct err e = ERR_INIT;
	struct img_stats st;
	struct img_reader *base;
	struct store *s;
	json_t *rep = NULL;
	char *dir = tpath("store"), *cmd;
	char *pp, *qp, *cp, *dp;

	guest_init(g, 42);
	*g2 = *g;
	guest_touch(g2, 1, 7);
	guest_touch(g2, 2, 9);
	s = store_open(dir, 1, &e);
	if (!check(s != NULL, "store opens (%s)", e.msg))
		return;
	pp = xasprintf("%s/P/memory.img", dir);
	qp = xasprintf("%s/Q/memory.img", dir);
	cp = xasprintf("%s/C/memory.img", dir);
	dp = xasprintf("%s/D/memory.img", dir);
	cmd = xasprintf("mkdir -p '%s/P' '%s/Q' '%s/C' '%s/D'", dir, dir, dir,
	    dir);
	check(system(cmd) == 0, "checkpoint directories");
	free(cmd);
	check(one_pass(g, pp, NULL, NULL, &st, &e) == 0, "P written (%s)",
	    e.msg);
	/* Q: a copy of P's directory (same image id, another inode). */
	cmd = xasprintf("cp '%s' '%s'", pp, qp);
	check(system(cmd) == 0, "Q is a copy of P");
	free(cmd);
	base = img_open(pp, &e);
	check(base != NULL && one_pass(g2, cp, base, "P", &st, &e) == 0,
	    "C written on P (%s)", e.msg);
	img_close(base);
	check(st.shared_chunks > 0, "C shares P's frames");

	/* Delete P: kept as .packs/<id>.img, its frames C does not name
	 * (chunks 1, 2) punched. */
	err_clear(&e);
	check(storepack_keep(s, "P", NULL, &e) == 0 &&
	    store_remove_checkpoint(s, "P", &e) == 0 &&
	    storepack_gc(s, &rep, &e) == 0, "P deleted (%s)", e.msg);
	{
		char *j = rep ? json_dumps(rep, JSON_COMPACT) : NULL;

		note("gc: %s", j ? j : "-");
		free(j);
	}
	json_decref(rep);
	rep = NULL;

	/* D on Q (live, P's id): shares every frame, chunks 1, 2 too. */
	base = img_open(qp, &e);
	check(base != NULL && one_pass(g, dp, base, "Q", &st, &e) == 0,
	    "D written on Q (%s)", e.msg);
	img_close(base);

	/* Delete Q: its whole image must be what D's pack resolves to. */
	err_clear(&e);
	check(storepack_keep(s, "Q", NULL, &e) == 0 &&
	    store_remove_checkpoint(s, "Q", &e) == 0 &&
	    storepack_gc(s, &rep, &e) == 0, "Q deleted (%s)", e.msg);
	{
		char *j = rep ? json_dumps(rep, JSON_COMPACT) : NULL;

		note("gc: %s", j ? j : "-");
		free(j);
	}
	json_decref(rep);

	/* A keep killed between its link and its rename: the GC removes
	 * the stale link. */
	cmd = xasprintf("touch '%s/.packs/.tmp-0123'", dir);
	check(system(cmd) == 0, "a stale .tmp- link");
	free(cmd);
	err_clear(&e);
	check(storepack_gc(s, &rep, &e) == 0, "gc again (%s)", e.msg);
	json_decref(rep);
	cmd = xasprintf("%s/.packs/.tmp-0123", dir);
	check(access(cmd, F_OK) != 0, "the GC removed the stale .tmp- link");
	free(cmd);

	same_pages(g2, cp, "C");
	same_pages(g, dp, "D (on Q, whose id the punched pack has)");
	store_close(s);
	free(pp);
	free(qp);
	free(cp);
	free(dp);
	free(dir);
	free(g);
	free(g2);
}

/*
 * A lazy restore (another process) holds deleted checkpoint P's image
 * open: the GC must keep the pack whole ("held"), whatever the length of
 * the store's path (mark_held() builds paths in a 300-byte buffer).
 */
static void
held_case(const char *sub, const char *what)
{
	struct guest *g = xcalloc(1, sizeof(*g)), *g2 = xcalloc(1, sizeof(*g2));
	struct err e = ERR_INIT;
	struct img_stats st;
	struct img_reader *base;
	struct store *s;
	json_t *rep = NULL;
	char *dir = tpath(sub), *cmd, *pp, *cp, c;
	int tochild[2], fromchild[2];
	pid_t pid;

	guest_init(g, 77);
	*g2 = *g;
	guest_touch(g2, 3, 5);
	cmd = xasprintf("mkdir -p '%s/P' '%s/C'", dir, dir);
	check(system(cmd) == 0, "%s: directories", what);
	free(cmd);
	s = store_open(dir, 1, &e);
	if (!check(s != NULL, "%s: store opens (%s)", what, e.msg)) {
		free(dir);
		free(g);
		free(g2);
		return;
	}
	pp = xasprintf("%s/P/memory.img", dir);
	cp = xasprintf("%s/C/memory.img", dir);
	check(one_pass(g, pp, NULL, NULL, &st, &e) == 0, "%s: P (%s)", what,
	    e.msg);
	base = img_open(pp, &e);
	check(base != NULL && one_pass(g2, cp, base, "P", &st, &e) == 0,
	    "%s: C on P (%s)", what, e.msg);
	img_close(base);
	if (pipe(tochild) < 0 || pipe(fromchild) < 0)
		return;
	if ((pid = fork()) == 0) {
		struct img_reader *r = img_open(pp, &e);

		c = r != NULL ? 'y' : 'n';
		if (write(fromchild[1], &c, 1) != 1 ||
		    read(tochild[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	check(read(fromchild[0], &c, 1) == 1 && c == 'y',
	    "%s: the reader holds P open", what);
	err_clear(&e);
	check(storepack_keep(s, "P", NULL, &e) == 0 &&
	    store_remove_checkpoint(s, "P", &e) == 0 &&
	    storepack_gc(s, &rep, &e) == 0, "%s: P deleted (%s)", what,
	    e.msg);
	check(rep != NULL && json_integer_value(json_object_get(rep,
	    "held")) == 1 && json_integer_value(json_object_get(rep,
	    "punched_bytes")) == 0, "%s: the pack another process reads is "
	    "held, nothing punched (held %lld, punched %lld)", what,
	    rep ? (long long)json_integer_value(json_object_get(rep, "held")) :
	    -1, rep ? (long long)json_integer_value(json_object_get(rep,
	    "punched_bytes")) : -1);
	json_decref(rep);
	c = 'x';
	if (write(tochild[1], &c, 1) != 1)
		note("child");
	waitpid(pid, NULL, 0);
	close(tochild[0]);
	close(tochild[1]);
	close(fromchild[0]);
	close(fromchild[1]);
	store_close(s);
	free(pp);
	free(cp);
	free(dir);
	free(g);
	free(g2);
}

static void
test_held(void)
{
	char longsub[320];

	held_case("short", "short store path");
	memset(longsub, 'x', 280);
	longsub[140] = '/';
	longsub[280] = '\0';
	held_case(longsub, "store path > 300 bytes");
}

/*
 * An image storepack_keep cannot open (here: out of file descriptors) is
 * not "nothing to keep": -1 naming the file, the checkpoint stays; no
 * file, a symbolic link or a file that is no image are nothing to keep.
 */
static void
test_keep_errors(void)
{
	struct guest *g = xcalloc(1, sizeof(*g));
	struct err e = ERR_INIT;
	struct img_stats st;
	struct rlimit old, lim;
	struct store *s;
	char *dir = tpath("kerr"), *cmd, *pp;
	int fd, rc;

	guest_init(g, 5);
	cmd = xasprintf("mkdir -p '%s/P' '%s/N' '%s/L' '%s/J' && "
	    "echo junk > '%s/J/memory.img' && "
	    "ln -s /nonexistent '%s/L/memory.img'", dir, dir, dir, dir, dir,
	    dir);
	check(system(cmd) == 0, "keep errors: directories");
	free(cmd);
	s = store_open(dir, 1, &e);
	if (!check(s != NULL, "keep errors: store opens (%s)", e.msg)) {
		free(dir);
		free(g);
		return;
	}
	pp = xasprintf("%s/P/memory.img", dir);
	check(one_pass(g, pp, NULL, NULL, &st, &e) == 0, "keep errors: P (%s)",
	    e.msg);
	err_clear(&e);
	check(storepack_keep(s, "N", NULL, &e) == 0 &&
	    storepack_keep(s, "L", NULL, &e) == 0 &&
	    storepack_keep(s, "J", NULL, &e) == 0,
	    "no image, a symbolic link, junk: nothing to keep (%s)", e.msg);
	/* The lowest free descriptor is the last one allowed. */
	fd = open("/dev/null", O_RDONLY);
	getrlimit(RLIMIT_NOFILE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)fd;
	close(fd);
	setrlimit(RLIMIT_NOFILE, &lim);
	err_clear(&e);
	rc = storepack_keep(s, "P", NULL, &e);
	setrlimit(RLIMIT_NOFILE, &old);
	check(rc == -1 && strstr(e.msg, "P/memory.img") != NULL,
	    "an image that cannot be opened (EMFILE): -1 naming it (rc %d, "
	    "'%s')", rc, e.msg);
	check(access(pp, F_OK) == 0, "P's image is still there");
	store_close(s);
	free(pp);
	free(dir);
	free(g);
}

/*
 * A reader holds deleted checkpoint C's image open, but has not opened the
 * pack of C's parent P (deleted before) yet: the GC must keep what C names
 * in P's pack, or the reader's next open finds it gone or punched.
 */
static void
test_held_chain(void)
{
	struct guest *g = xcalloc(1, sizeof(*g)), *g2 = xcalloc(1, sizeof(*g2));
	struct err e = ERR_INIT;
	struct img_stats st;
	struct img_reader *base, *r;
	struct store *s;
	json_t *rep = NULL;
	char *dir = tpath("chain"), *cmd, *pp, *cp, *cpack = NULL, c;
	char hex[2 * IMG_ID_SIZE + 1];
	int tochild[2], fromchild[2];
	pid_t pid;

	guest_init(g, 91);
	*g2 = *g;
	guest_touch(g2, 4, 3);
	cmd = xasprintf("mkdir -p '%s/P' '%s/C'", dir, dir);
	check(system(cmd) == 0, "chain: directories");
	free(cmd);
	if (!check((s = store_open(dir, 1, &e)) != NULL, "chain: store opens "
	    "(%s)", e.msg))
		goto out;
	pp = xasprintf("%s/P/memory.img", dir);
	cp = xasprintf("%s/C/memory.img", dir);
	check(one_pass(g, pp, NULL, NULL, &st, &e) == 0, "chain: P (%s)",
	    e.msg);
	base = img_open(pp, &e);
	check(base != NULL && one_pass(g2, cp, base, "P", &st, &e) == 0 &&
	    st.shared_chunks > 0, "chain: C on P, sharing (%s)", e.msg);
	img_close(base);
	if ((r = img_open(cp, &e)) != NULL) {
		img_id_hex(img_meta(r)->id, hex);
		cpack = xasprintf("%s/.packs/%s.img", dir, hex);
		img_close(r);
	}
	err_clear(&e);
	check(storepack_keep(s, "P", NULL, &e) == 0 &&
	    store_remove_checkpoint(s, "P", &e) == 0 &&
	    storepack_gc(s, &rep, &e) == 0, "chain: P deleted (%s)", e.msg);
	json_decref(rep);
	rep = NULL;
	if (cpack == NULL || pipe(tochild) < 0 || pipe(fromchild) < 0)
		goto done;
	if ((pid = fork()) == 0) {
		/* C's image alone now; its packs after the GC, as a reader
		 * that opened its image first would. */
		int fd = open(cp, O_RDONLY);

		c = fd >= 0 ? 'y' : 'n';
		if (write(fromchild[1], &c, 1) != 1 ||
		    read(tochild[0], &c, 1) != 1)
			_exit(1);
		r = img_open_finder(cpack, NULL, &e);
		c = r != NULL && img_verify(r, &e) == 0 ? 'y' : 'n';
		if (c != 'y')
			fprintf(stderr, "# child: %s\n", e.msg);
		if (write(fromchild[1], &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	check(read(fromchild[0], &c, 1) == 1 && c == 'y',
	    "chain: a reader holds C's image open");
	err_clear(&e);
	check(storepack_keep(s, "C", NULL, &e) == 0 &&
	    store_remove_checkpoint(s, "C", &e) == 0 &&
	    storepack_gc(s, &rep, &e) == 0, "chain: C deleted (%s)", e.msg);
	check(rep != NULL && json_integer_value(json_object_get(rep,
	    "held")) >= 1 && json_array_size(json_object_get(rep,
	    "removed")) == 0, "chain: C's pack held, P's kept for it (held "
	    "%lld, removed %zu)", rep ? (long long)json_integer_value(
	    json_object_get(rep, "held")) : -1, rep ? json_array_size(
	    json_object_get(rep, "removed")) : 0);
	json_decref(rep);
	rep = NULL;
	c = 'x';
	check(write(tochild[1], &c, 1) == 1 && read(fromchild[0], &c, 1) == 1 &&
	    c == 'y', "chain: the reader then opens C with P's pack and "
	    "verifies every frame");
	waitpid(pid, NULL, 0);
	close(tochild[0]);
	close(tochild[1]);
	close(fromchild[0]);
	close(fromchild[1]);
	/* The reader gone, the next GC frees both. */
	err_clear(&e);
	check(storepack_gc(s, &rep, &e) == 0 && rep != NULL &&
	    json_array_size(json_object_get(rep, "removed")) == 2,
	    "chain: then the GC removes both packs (%s)", e.msg);
	json_decref(rep);
done:
	store_close(s);
	free(pp);
	free(cp);
out:
	free(cpack);
	free(dir);
	free(g);
	free(g2);
}

int
main(void)
{
	const char *base = getenv("TMPDIR");
	char *t = xasprintf("%s/unit-storepack.XXXXXX", base ? base : "/tmp");

	tmpdir = mkdtemp(t);
	if (tmpdir == NULL) {
		printf("not ok 1 - cannot create a temporary directory\n");
		return 1;
	}
	test_copied_checkpoint();
	test_held();
	test_held_chain();
	test_keep_errors();
	if (tap_failed == 0) {
		char *cmd = xasprintf("rm -rf '%s'", tmpdir);

		if (system(cmd) != 0)
			note("cannot remove %s", tmpdir);
		free(cmd);
	}
	free(t);
	return tap_done();
}
