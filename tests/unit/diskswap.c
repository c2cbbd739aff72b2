/*
 * tests/unit/diskswap.c - the disk swap's file steps without QEMU: the
 * VM's path from a temporary name, prepare (state linked, overlay made
 * 0600 naming the state), undo, finish, and recover with QEMU gone: an
 * overlay nothing wrote into is undone, one that holds writes is finished
 * (issue 11: a SIGKILL at any step loses nothing).
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskswap.h"
#include "tap.h"
#include "util.h"

static char dir[] = "/tmp/snapctl-unit-diskswap.XXXXXX";
static char p[300], f[300], o[300];

static ino_t
ino(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 ? st.st_ino : 0;
}

static int
exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* P: a qcow2 header (no backing) and some bytes. */
static void
make_p(void)
{
	unsigned char h[4096];
	int fd;

	memset(h, 0x5a, sizeof(h));
	memcpy(h, "QFI\xfb\0\0\0\3", 8);
	memset(h + 8, 0, 64);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, h, sizeof(h)) != (ssize_t)sizeof(h))
		abort();
	close(fd);
}

static int
plan(struct diskswap *s, const char *ckpt)
{
	char layer[300];

	snprintf(layer, sizeof(layer), "%s/d0.%s.qcow2", dir, ckpt);
	snprintf(f, sizeof(f), "%s", layer);
	snprintf(o, sizeof(o), "%s/.d0.qcow2.snapctl-%s", dir, ckpt);
	return diskswap_plan(s, p, p, layer, ckpt, 64u << 20, NULL);
}

int
main(void)
{
	struct diskswap s;
	struct diskfile df;
	struct stat st;
	json_t *nt, *actions;
	char *vp, tq[300];
	ino_t a;
	int pending, fd;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(p, sizeof(p), "%s/d0.qcow2", dir);
	make_p();
	a = ino(p);

	/* The VM's path from QEMU's name of a finished swap's overlay. */
	snprintf(tq, sizeof(tq), "%s/.d0.qcow2.snapctl-c1", dir);
	vp = diskswap_vm_path(tq, &pending);
	check(strcmp(vp, p) == 0 && !pending, "'.d0.qcow2.snapctl-c1' is "
	    "the VM's d0.qcow2 (%s)", vp);
	free(vp);
	vp = diskswap_vm_path(p, &pending);
	check(strcmp(vp, p) == 0 && !pending, "a plain name is itself");
	free(vp);

	/* A symbolic link cannot be renamed over: refused. */
	{
		char ln[300], lay[300];

		snprintf(ln, sizeof(ln), "%s/ln.qcow2", dir);
		snprintf(lay, sizeof(lay), "%s/ln.c1.qcow2", dir);
		if (symlink(p, ln) < 0)
			abort();
		check(diskswap_plan(&s, ln, ln, lay, "c1", 1 << 20, NULL) < 0,
		    "a VM path that is a symbolic link is refused");
		diskswap_release(&s);
		unlink(ln);
	}

	/* prepare, then undo: as before. */
	check(plan(&s, "c1") == 0, "plan c1");
	check(diskswap_prepare(&s, NULL) == 0, "prepare");
	check(ino(f) == a && ino(p) == a, "the state d0.c1.qcow2 is a link "
	    "of d0.qcow2");
	check(lstat(o, &st) == 0 && (st.st_mode & 0777) == 0600,
	    "the overlay is made, 0600");
	check(diskfile_probe(o, &df, NULL) == 0 && df.backing != NULL &&
	    strcmp(df.backing, f) == 0 && strcmp(df.format, "qcow2") == 0,
	    "it is a qcow2 backed by the state");
	diskfile_release(&df);
	vp = diskswap_vm_path(o, &pending);
	check(pending, "a temporary name that is a file of its own is an "
	    "unfinished swap");
	free(vp);
	diskswap_undo(&s);
	check(!exists(f) && !exists(o) && ino(p) == a, "undo: only d0.qcow2 "
	    "is left, the same file");
	diskswap_release(&s);

	/* prepare, finish: P is the overlay, the state the old P. */
	check(plan(&s, "c2") == 0 && diskswap_prepare(&s, NULL) == 0,
	    "prepare c2");
	check(diskswap_finish(&s, NULL) == 0, "finish");
	check(ino(f) == a && ino(p) != a && ino(o) == ino(p), "d0.qcow2 is "
	    "the new overlay, d0.c2.qcow2 the old file; the temporary name "
	    "(QEMU's) still names the overlay");
	check(diskfile_probe(p, &df, NULL) == 0 && df.backing != NULL &&
	    strcmp(df.backing, f) == 0, "d0.qcow2 is backed by d0.c2.qcow2");
	diskfile_release(&df);
	diskswap_release(&s);
	check(plan(&s, "c2") < 0, "a state that exists is refused");
	diskswap_release(&s);
	a = ino(p);

	/* Killed before the cut, QEMU gone: an untouched overlay is undone. */
	check(plan(&s, "k1") == 0 && diskswap_prepare(&s, NULL) == 0,
	    "prepare k1");
	s.node = "n0";
	nt = diskswap_note(&s);
	actions = json_array();
	diskswap_release(&s);
	check(diskswap_recover(NULL, nt, actions, NULL) == 0, "recover k1 "
	    "without QEMU");
	check(!exists(f) && !exists(o) && ino(p) == a, "... undone: nothing "
	    "was written into the overlay");
	check(json_array_size(actions) == 2, "... two actions (%zu)",
	    json_array_size(actions));
	json_decref(nt);
	json_decref(actions);

	/* A checkpoint of a QEMU that restarted on d0.qcow2: c2's temporary
	 * name, left behind, goes with the cut. */
	check(plan(&s, "c3") == 0 && diskswap_prepare(&s, NULL) == 0 &&
	    diskswap_finish(&s, NULL) == 0, "c3 of the restarted VM");
	snprintf(tq, sizeof(tq), "%s/.d0.qcow2.snapctl-c2", dir);
	check(!exists(tq) && ino(o) == ino(p), "... c2's temporary name went, "
	    "c3's names d0.qcow2");
	diskswap_release(&s);
	a = ino(p);

	/* Killed after the cut, QEMU gone: an overlay with writes wins. */
	check(plan(&s, "k2") == 0 && diskswap_prepare(&s, NULL) == 0,
	    "prepare k2");
	s.node = "n0";
	nt = diskswap_note(&s);
	diskswap_release(&s);
	fd = open(o, O_WRONLY);
	check(fd >= 0 && pwrite(fd, "x", 1, 8 << 20) == 1, "the guest wrote "
	    "into it");
	if (fd >= 0)
		close(fd);
	actions = json_array();
	check(diskswap_recover(NULL, nt, actions, NULL) == 0, "recover k2 "
	    "without QEMU");
	check(ino(o) == ino(p) && ino(f) == a && ino(p) != a, "... "
	    "finished: d0.qcow2 holds the writes, d0.k2.qcow2 the state");
	check(diskswap_recover(NULL, nt, actions, NULL) == 0 &&
	    ino(f) == a && exists(p), "recover again changes nothing");
	json_decref(nt);
	json_decref(actions);

	/* The overlay writer revert reuses, and telling its files from
	 * QEMU's (revert --discard). */
	{
		char ov[300], *b;
		unsigned char h[8];
		int wfd;

		snprintf(ov, sizeof(ov), "%s/.d0.qcow2.revert-c1", dir);
		check(diskswap_overlay_write(ov, "d0.c1.qcow2", 64u << 20,
		    NULL) == 0, "overlay_write makes an overlay");
		check(diskswap_overlay_write(ov, "d0.c1.qcow2", 64u << 20,
		    NULL) < 0, "... never over a file that exists");
		check(diskswap_overlay_pristine(ov, "d0.c1.qcow2") &&
		    !diskswap_overlay_pristine(ov, "d0.c2.qcow2"),
		    "... pristine, with that backing name only");
		b = diskswap_overlay_ours(ov);
		check(b != NULL && strcmp(b, "d0.c1.qcow2") == 0,
		    "overlay_ours gives its backing name");
		free(b);
		/* A header length of 112, as QEMU writes: not ours. */
		wfd = open(ov, O_RDWR);
		put_be32(h, 112);
		check(wfd >= 0 && pwrite(wfd, h, 4, 100) == 4,
		    "... made QEMU's");
		close(wfd);
		check(diskswap_overlay_ours(ov) == NULL, "... then it is not");
		unlink(ov);
		check(diskswap_overlay_write(ov, "d0.c1.qcow2", 64u << 20,
		    NULL) == 0, "another overlay");
		wfd = open(ov, O_RDWR);
		memset(h, 0, sizeof(h));
		check(wfd >= 0 && pwrite(wfd, h, 4, 16) == 4,
		    "... its backing name's length made 0");
		close(wfd);
		check(diskswap_overlay_ours(ov) == NULL,
		    "... then it is not ours");
		unlink(ov);
	}

	{
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			note("could not remove %s", dir);
	}
	return tap_done();
}
