/*
 * tests/unit/diskfile.c - diskfile_stem: the stem for a new overlay comes
 * from the lowest image of the backing chain that every image above it
 * extends, so names never grow (issue 11), whichever store made the files;
 * an unreadable or foreign chain falls back to the file's own name.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diskfile.h"
#include "tap.h"

static char dir[] = "/tmp/snapctl-unit-diskfile.XXXXXX";

/* A qcow2 header (magic, version 3) naming backing, or a raw file. */
static void
make_image(const char *name, const char *backing)
{
	unsigned char h[512];
	char path[256];
	size_t bl;
	int fd;

	memset(h, 0, sizeof(h));
	if (backing != NULL) {
		bl = strlen(backing);
		memcpy(h, "QFI\xfb", 4);
		h[7] = 3;
		h[15] = 104;		/* backing name offset (BE u64) */
		h[19] = (unsigned char)bl; /* its length (BE u32) */
		memcpy(h + 104, backing, bl);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, h, sizeof(h)) != (ssize_t)sizeof(h))
		abort();
	close(fd);
}

static void
stem_is(const char *name, const char *want)
{
	char path[256], *got;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	got = diskfile_stem(path);
	check(strcmp(got, want) == 0, "stem of %s: %s (want %s)", name, got,
	    want);
	free(got);
}

int
main(void)
{
	char link[300], cmd[300];
	int i;

	if (mkdtemp(dir) == NULL)
		abort();
	make_image("d0.qcow2", NULL);
	make_image("d0.c1.qcow2", "d0.qcow2");
	make_image("d0.c2.qcow2", "d0.c1.qcow2");
	snprintf(link, sizeof(link), "%s/d0.c2.qcow2", dir);
	make_image("d0.20261123T081500.123Z.qcow2", link);	/* absolute */
	make_image("d0.restore-20261205T101500Z.qcow2",
	    "d0.20261123T081500.123Z.qcow2");

	stem_is("d0.qcow2", "d0");
	stem_is("d0.c1.qcow2", "d0");
	stem_is("d0.c2.qcow2", "d0");
	stem_is("d0.20261123T081500.123Z.qcow2", "d0");
	stem_is("d0.restore-20261205T101500Z.qcow2", "d0");

	/* The name of issue 11's report, made by another store: no growth. */
	make_image("d1.qcow2", NULL);
	make_image("d1.f1.qcow2", "d1.qcow2");
	make_image("d1.f1.f11.qcow2", "d1.f1.qcow2");
	make_image("d1.f1.f11.k13.qcow2", "d1.f1.f11.qcow2");
	stem_is("d1.f1.f11.k13.qcow2", "d1");

	/* A VM image on a shared base starts its own stem. */
	make_image("debian.qcow2", NULL);
	make_image("vm1.qcow2", "debian.qcow2");
	make_image("vm1.c1.qcow2", "vm1.qcow2");
	stem_is("vm1.c1.qcow2", "vm1");
	/* ... and "debian.qcow2" <- "debian-vm.qcow2" does not extend it. */
	make_image("debian-vm.qcow2", "debian.qcow2");
	stem_is("debian-vm.qcow2", "debian-vm");

	/* A missing backing file ends the walk, its name still counts. */
	make_image("x.c1.qcow2", "x.qcow2");
	stem_is("x.c1.qcow2", "x");
	/* A file that cannot be read: its own name. */
	stem_is("nothing.c5.qcow2", "nothing.c5");
	/* A backing loop is bounded. */
	make_image("loop.a.qcow2", "loop.qcow2");
	make_image("loop.qcow2", "loop.a.qcow2");
	stem_is("loop.a.qcow2", "loop");
	/* A long chain: at most DISKFILE_STEM_DEPTH files are read (here
	 * none extends the one below: the top's own stem). */
	for (i = 0; i < DISKFILE_STEM_DEPTH + 10; i++) {
		char n[64], b[64];

		snprintf(n, sizeof(n), "long.%03d.qcow2", i + 1);
		snprintf(b, sizeof(b), i ? "long.%03d.qcow2" : "long.qcow2", i);
		make_image(n, b);
	}
	make_image("long.qcow2", NULL);
	snprintf(link, sizeof(link), "long.%03d.qcow2", DISKFILE_STEM_DEPTH + 10);
	snprintf(cmd, sizeof(cmd), "long.%03d", DISKFILE_STEM_DEPTH + 10);
	stem_is(link, cmd);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		note("could not remove %s", dir);
	return tap_done();
}
