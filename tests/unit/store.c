/*
 * tests/unit/store.c - the store's default checkpoint name: UTC to the
 * millisecond, so two checkpoints in one second differ; valid names; later
 * times sort after; the revert note (which checkpoint a disk path was
 * reverted to) matches the file the path names, not a later one.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "tap.h"

int
main(void)
{
	char a[32], b[32], c[32];

	/* 2026-11-23 08:15:00 UTC. */
	store_default_name(1795421700.0, a);
	check(strcmp(a, "20261123T081500.000Z") == 0, "whole second: %s", a);
	store_default_name(1795421700.123, b);
	check(strcmp(b, "20261123T081500.123Z") == 0, "milliseconds: %s", b);
	store_default_name(1795421700.9996, c);
	check(strcmp(c, "20261123T081500.999Z") == 0,
	    "never rounds into the next second: %s", c);
	check(strcmp(a, b) != 0, "two names in one second differ");
	check(strcmp(a, b) < 0 && strcmp(b, c) < 0, "later sorts after");
	store_default_name(1795421701.001, c);
	check(strcmp(b, c) < 0, "the next second sorts after: %s", c);
	check(store_name_check(a, NULL) == 0 && store_name_check(b, NULL) == 0,
	    "valid checkpoint names");
	{
		char dir[] = "/tmp/snapctl-unit-store.XXXXXX";
		char st[300], cp[300], disk[300], tmp[300], cmd[400], *n;
		struct store *s;
		int fd;

		if (mkdtemp(dir) == NULL)
			return 1;
		snprintf(st, sizeof(st), "%s/store", dir);
		snprintf(cp, sizeof(cp), "%s/store/c1", dir);
		snprintf(disk, sizeof(disk), "%s/d0.qcow2", dir);
		snprintf(tmp, sizeof(tmp), "%s/x", dir);
		s = store_open(st, 1, NULL);
		fd = open(disk, O_WRONLY | O_CREAT, 0600);
		check(s != NULL && fd >= 0 && mkdir(cp, 0700) == 0, "a store "
		    "with a checkpoint c1, a disk");
		close(fd);
		check(store_revert_read(s, disk) == NULL, "no note: no parent");
		check(store_revert_write(s, disk, "c1", NULL) == 0,
		    "the revert note is written");
		n = store_revert_read(s, disk);
		check(n != NULL && strcmp(n, "c1") == 0, "it names c1");
		free(n);
		/* A checkpoint swaps the path: another file there. */
		fd = open(tmp, O_WRONLY | O_CREAT, 0600);
		close(fd);
		check(rename(tmp, disk) == 0 && store_revert_read(s, disk) ==
		    NULL, "another file at the path: no parent from the note");
		rmdir(cp);
		check(store_revert_write(s, disk, "c2", NULL) == 0,
		    "a note for the new file");
		check(store_revert_read(s, disk) == NULL,
		    "a checkpoint not in the store: no parent");
		store_close(s);
		snprintf(cmd, sizeof(cmd), "ls -A '%s' | grep -c '^.revert-' "
		    "| grep -qx 1", st);
		check(system(cmd) == 0, "the stale note was swept");
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			note("could not remove %s", dir);
	}
	return tap_done();
}
