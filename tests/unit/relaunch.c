/*
 * tests/unit/relaunch.c - the recorded QEMU command line rewritten for a
 * restore: disks on the checkpoint's state (-drive with its commas doubled,
 * -blockdev as JSON and as key=value, its file node dropped), what would
 * clash with a running original dropped or moved into DIR, extra arguments
 * replacing recorded ones by name and id; "info" mode; a record that
 * cannot be read.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "relaunch.h"
#include "tap.h"

static char *
joined(char **argv)
{
	static char out[8192];
	size_t i, n = 0;

	out[0] = '\0';
	for (i = 0; argv != NULL && argv[i] != NULL; i++)
		n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s",
		    i ? " " : "", argv[i]);
	return out;
}

static json_t *
manifest(const char *argv_json, int readable)
{
	json_t *m = json_pack("{s:s, s:[{s:s, s:s, s:s, s:s}, {s:s, s:s, "
	    "s:s, s:s}]}", "name", "c1", "disks",
	    "device", "drive0", "file", "/s/d,0.qcow2", "format", "qcow2",
	    "qdev", "/machine/peripheral/vd0/virtio-backend",
	    "device", "", "file", "/s/d1.raw", "format", "raw",
	    "qdev", "/machine/peripheral/vd1/virtio-backend");

	json_object_set_new(m, "launch", json_pack("{s:b, s:s, s:s, s:o}",
	    "readable", readable, "reason", "cannot read '/proc/1/exe': "
	    "Permission denied", "exe", "/usr/bin/qemu-system-x86_64", "argv",
	    json_loads(argv_json, 0, NULL)));
	return m;
}

int
main(void)
{
	struct err e = ERR_INIT;
	json_t *m;
	char **argv;
	char *const extra[] = { "-m", "512", "-device",
	    "e1000,id=usb0", "-device", "e1000", NULL };

	m = manifest("[\"qemu-system-x86_64\", \"-m\", \"256\", "
	    "\"--daemonize\", \"-pidfile\", \"/run/p\", \"-S\", "
	    "\"-incoming\", \"defer\", \"-qmp\", \"unix:/run/q,server=on\", "
	    "\"-vnc\", \":1\", \"-serial\", \"unix:/run/s,server=on\", "
	    "\"-serial\", \"null\", "
	    "\"-chardev\", \"socket,id=qga0,path=/run/g,server=on\", "
	    "\"-chardev\", \"file,id=log0,path=/var/log/x\", "
	    "\"-drive\", \"file=/vm/d,,0.qcow2,if=none,id=drive0,"
	    "format=qcow2,cache=none\", "
	    "\"-device\", \"virtio-blk-pci,drive=drive0,id=vd0\", "
	    "\"-blockdev\", \"{\\\"driver\\\":\\\"file\\\",\\\"filename\\\":"
	    "\\\"/vm/d1.raw\\\",\\\"node-name\\\":\\\"f1\\\"}\", "
	    "\"-blockdev\", \"{\\\"driver\\\":\\\"raw\\\",\\\"file\\\":"
	    "\\\"f1\\\",\\\"node-name\\\":\\\"disk1\\\"}\", "
	    "\"-device\", \"virtio-blk-pci,drive=disk1,id=vd1\", "
	    "\"-device\", \"qemu-xhci,id=usb0\", \"-nodefaults\"]", 1);

	argv = relaunch_argv(m, "c1", "/r", extra, &e);
	check(argv != NULL, "a second instance: %s", e.msg);
	check(strstr(joined(argv), "\"driver\":\"raw\",\"file\":{\"driver\":"
	    "\"file\",\"filename\":\"/s/d1.raw\",\"locking\":\"off\"}") !=
	    NULL, "-blockdev JSON: the state's format over its file: %s",
	    joined(argv));
	check(strstr(joined(argv), "-blockdev {\"driver\":\"file\"") == NULL,
	    "... its former file node is dropped");
	check(strstr(joined(argv), "-drive if=none,id=drive0,cache=none,"
	    "file=/s/d,,0.qcow2,format=qcow2,file.locking=off ") != NULL,
	    "-drive: file= the state, commas doubled, other keys kept");
	check(strstr(joined(argv), "-daemonize") == NULL &&
	    strstr(joined(argv), "-pidfile") == NULL &&
	    strstr(joined(argv), "-qmp") == NULL &&
	    strstr(joined(argv), "-incoming") == NULL &&
	    strstr(joined(argv), " -S") == NULL,
	    "-daemonize, -pidfile, -qmp, -incoming, -S dropped");
	check(strstr(joined(argv), "-vnc none -serial file:/r/serial0.log "
	    "-serial null -chardev null,id=qga0 -chardev file,id=log0,"
	    "path=/r/chardev-log0.log ") != NULL,
	    "-vnc none, serial and chardevs moved to DIR");
	check(strstr(joined(argv), "-m 256") == NULL &&
	    strstr(joined(argv), "qemu-xhci") == NULL,
	    "extra -m and -device id=usb0 replace the recorded ones");
	check(strstr(joined(argv), "-nodefaults -m 512 -device e1000,id=usb0 "
	    "-device e1000") != NULL, "... appended in order");
	relaunch_free(argv);

	argv = relaunch_argv(m, "c1", NULL, NULL, &e);
	check(argv != NULL && strstr(joined(argv), "-qmp unix:/run/q,"
	    "server=on -vnc :1 -serial unix:/run/s,server=on") != NULL,
	    "info: the original's own sockets stay");
	check(strstr(joined(argv), "locking") == NULL,
	    "info: no locking=off");
	check(strlen(joined(argv)) > 15 && strcmp(joined(argv) +
	    strlen(joined(argv)) - 15, "-incoming defer") == 0,
	    "info: -incoming defer at the end");
	relaunch_free(argv);
	json_decref(m);

	m = manifest("[\"qemu\", \"-blockdev\", \"driver=qcow2,"
	    "node-name=disk0,file.driver=file,file.filename=/vm/a.qcow2\", "
	    "\"-device\", \"virtio-blk-pci,drive=disk0,id=vd0\"]", 1);
	argv = relaunch_argv(m, "c1", "/r", NULL, &e);
	check(argv == NULL && strstr(e.msg, "cannot find disk 'vd1' in the recorded command line") != NULL,
	    "a disk missing from the command line: %s", e.msg);
	relaunch_free(argv);
	json_decref(m);

	err_clear(&e);
	m = manifest("[\"qemu\"]", 0);
	argv = relaunch_argv(m, "c1", "/r", NULL, &e);
	check(argv == NULL && strcmp(e.msg, "checkpoint 'c1' has no record "
	    "of how its VM was started (cannot read '/proc/1/exe': "
	    "Permission denied): restore it with --exec -- QEMU ARGS...") ==
	    0, "an unreadable record: %s", e.msg);
	json_decref(m);
	return tap_done();
}
