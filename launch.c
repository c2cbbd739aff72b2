/*
 * launch.c - record how a VM was started (its QEMU process's binary and
 * arguments, read from /proc through the QMP socket's peer) and what QEMU
 * says the VM is (the summary); compare a waiting QEMU with that summary.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch.h"
#include "util.h"

#include "banned.h"

#define CMDLINE_MAX (1 << 20)

static json_t *
unreadable(json_t *pid, const char *fmt, const char *a, const char *b)
{
	char why[2 * PATH_MAX + 256];

	snprintf(why, sizeof(why), fmt, a, b);
	return json_pack("{s:b, s:s, s:o, s:n, s:n}", "readable", 0,
	    "reason", why, "pid", pid, "exe", "argv");
}

/* /proc/PID/cmdline as an array of strings, or NULL with errno set. */
static json_t *
read_cmdline(pid_t pid)
{
	char path[64];
	struct buf b = BUF_INIT;
	char chunk[4096];
	json_t *argv = NULL;
	ssize_t n;
	size_t i, start;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0 &&
	    b.len < CMDLINE_MAX)
		buf_add(&b, chunk, (size_t)n);
	close(fd);
	if (n < 0 || b.len == 0) {
		if (n == 0)
			errno = ESRCH;	/* a zombie, or a kernel thread */
		buf_release(&b);
		return NULL;
	}
	if (b.data[b.len - 1] != '\0')
		buf_addc(&b, '\0');
	argv = json_array();
	for (i = 0, start = 0; i < b.len; i++) {
		if (b.data[i] != '\0')
			continue;
		json_array_append_new(argv, json_string((char *)b.data +
		    start));
		start = i + 1;
	}
	buf_release(&b);
	return argv;
}

static int
looks_like_qemu(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base != NULL ? base + 1 : path;
	return strncmp(base, "qemu", 4) == 0 || strstr(base, "kvm") != NULL;
}

json_t *
launch_record(struct qmp *q)
{
	char path[64], exe[PATH_MAX + 1];
	const char *argv0;
	json_t *argv;
	struct stat st;
	ssize_t n;
	size_t len;
	pid_t pid;

	if (qmp_peer_pid(q, &pid) < 0)
		return unreadable(json_null(), "the QMP socket's peer is not "
		    "known (not a local UNIX socket)%s%s", "", "");
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n < 0) {
		snprintf(exe, sizeof(exe), "%s", strerror(errno));
		return unreadable(json_integer(pid), "cannot read '%s': %s "
		    "(QEMU runs as another user)", path, exe);
	}
	exe[n] = '\0';
	argv = read_cmdline(pid);
	if (argv == NULL) {
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		return unreadable(json_integer(pid), "cannot read '%s': %s",
		    path, strerror(errno));
	}
	argv0 = json_string_value(json_array_get(argv, 0));
	if (!looks_like_qemu(exe) && (argv0 == NULL ||
	    !looks_like_qemu(argv0))) {
		json_decref(argv);
		return unreadable(json_integer(pid), "the QMP socket's peer "
		    "'%s' is not QEMU (did QEMU create the socket itself?)%s",
		    exe, "");
	}
	/* Replaced since it started (an upgrade): the new file at that
	 * path, else what it was started as. */
	len = strlen(exe);
	if (len > 10 && strcmp(exe + len - 10, " (deleted)") == 0) {
		exe[len - 10] = '\0';
		if (stat(exe, &st) < 0 && argv0 != NULL)
			snprintf(exe, sizeof(exe), "%s", argv0);
	}
	return json_pack("{s:b, s:n, s:I, s:s, s:o}", "readable", 1,
	    "reason", "pid", (json_int_t)pid, "exe", exe, "argv", argv);
}

/* The user's devices under one QOM container. */
static int
add_devices(struct qmp *q, const char *container, int with_id, json_t *out,
    struct err *e)
{
	json_t *r, *bus, *it;
	const char *name, *type;
	char *path;
	size_t i, n;

	r = qmp_call(q, "qom-list", json_pack("{s:s}", "path", container), e);
	if (r == NULL)
		return -1;
	json_array_foreach(r, i, it) {
		name = json_str(it, "name");
		type = json_str(it, "type");
		if (name == NULL || type == NULL ||
		    strncmp(type, "child<", 6) != 0)
			continue;
		n = strlen(type);
		path = xasprintf("%s/%s", container, name);
		bus = qmp_execute(q, "qom-get", json_pack("{s:s, s:s}",
		    "path", path, "property", "parent_bus"), NULL);
		json_array_append_new(out, json_pack("{s:s?, s:s%, s:s?}",
		    "id", with_id ? name : NULL, "type", type + 6, n - 7,
		    "bus", json_string_value(bus)));
		json_decref(bus);
		free(path);
	}
	json_decref(r);
	return 0;
}

json_t *
launch_summary(struct qmp *q, struct err *e)
{
	json_t *s = NULL, *r = NULL, *memdevs, *devices, *it;
	const char *t;
	size_t i, n;

	s = json_object();
	r = qmp_call(q, "qom-get", json_pack("{s:s, s:s}", "path", "/machine",
	    "property", "type"), e);
	if (r == NULL)
		goto fail;
	t = json_string_value(r) != NULL ? json_string_value(r) : "";
	n = strlen(t);
	if (n > 8 && strcmp(t + n - 8, "-machine") == 0)
		n -= 8;
	json_object_set_new(s, "machine", json_stringn(t, n));
	json_decref(r);
	if ((r = qmp_call(q, "query-memory-size-summary", NULL, e)) == NULL)
		goto fail;
	json_object_set(s, "ram_bytes", json_object_get(r, "base-memory"));
	json_decref(r);
	if ((r = qmp_call(q, "query-cpus-fast", NULL, e)) == NULL)
		goto fail;
	json_object_set_new(s, "cpus", json_integer((json_int_t)
	    json_array_size(r)));
	json_decref(r);
	if ((r = qmp_call(q, "query-memdev", NULL, e)) == NULL)
		goto fail;
	memdevs = json_array();
	json_array_foreach(r, i, it)
		json_array_append_new(memdevs, json_pack("{s:s?, s:O?}", "id",
		    json_str(it, "id"), "size", json_object_get(it, "size")));
	json_object_set_new(s, "memdevs", memdevs);
	json_decref(r);
	r = NULL;
	devices = json_array();
	json_object_set_new(s, "devices", devices);
	if (add_devices(q, "/machine/peripheral", 1, devices, e) < 0 ||
	    add_devices(q, "/machine/peripheral-anon", 0, devices, e) < 0)
		goto fail;
	return s;
fail:
	json_decref(r);
	json_decref(s);
	return NULL;
}

int
launch_compare(struct qmp *q, const json_t *summary, const char *name,
    struct err *e)
{
	json_t *now = NULL, *d, *v = NULL, *m, *w = NULL;
	const char *id, *type, *bus;
	size_t i, j;
	int rc = -1;

	if (!json_is_array(json_object_get(summary, "devices")))
		return 0;
	if ((now = launch_summary(q, e)) == NULL)
		return -1;
	json_array_foreach(json_object_get(summary, "devices"), i, d) {
		id = json_str(d, "id");
		type = json_str(d, "type");
		bus = json_str(d, "bus");
		if (id == NULL || type == NULL)
			continue;	/* no id: QEMU judges, by its address */
		json_array_foreach(json_object_get(now, "devices"), j, v)
			if (json_str(v, "id") != NULL &&
			    strcmp(json_str(v, "id"), id) == 0)
				break;
		if (j == json_array_size(json_object_get(now, "devices"))) {
			err_set(e, ERR_MISMATCH, "wrong devices: the VM has no "
			    "device '%s' (%s%s%s) that checkpoint '%s' holds: "
			    "start QEMU with it (see snapctl info %s)", id, type,
			    bus ? " on " : "", bus ? bus : "", name, name);
			goto out;
		}
		if (json_str(v, "type") == NULL ||
		    strcmp(json_str(v, "type"), type) != 0) {
			err_set(e, ERR_MISMATCH, "wrong devices: device '%s' is "
			    "a %s in the VM, a %s in checkpoint '%s'", id,
			    json_str(v, "type") ? json_str(v, "type") : "?",
			    type, name);
			goto out;
		}
	}
	json_array_foreach(json_object_get(summary, "memdevs"), i, m) {
		id = json_str(m, "id");
		if (id == NULL)
			continue;
		json_array_foreach(json_object_get(now, "memdevs"), j, w)
			if (json_str(w, "id") != NULL &&
			    strcmp(json_str(w, "id"), id) == 0)
				break;
		if (j == json_array_size(json_object_get(now, "memdevs"))) {
			err_set(e, ERR_MISMATCH, "wrong memory: the VM has no "
			    "memory backend '%s' that checkpoint '%s' holds: "
			    "start QEMU with it (see snapctl info %s)", id, name,
			    name);
			goto out;
		}
		if (!json_equal(json_object_get(m, "size"),
		    json_object_get(w, "size"))) {
			err_set(e, ERR_MISMATCH, "wrong memory: memory backend "
			    "'%s' is %lld bytes in the VM, %lld in checkpoint "
			    "'%s'", id, (long long)json_integer_value(
			    json_object_get(w, "size")), (long long)
			    json_integer_value(json_object_get(m, "size")),
			    name);
			goto out;
		}
	}
	rc = 0;
out:
	json_decref(now);
	return rc;
}

static int
bad(const char *shown, const char *what, struct err *e)
{
	return err_set(e, ERR_FAIL, "'%s': invalid manifest: %s", shown, what);
}

int
launch_check(const json_t *m, const char *shown, struct err *e)
{
	const json_t *l = json_object_get(m, MF_LAUNCH);
	const json_t *s = json_object_get(m, MF_SUMMARY), *v, *d;
	size_t i;

	if (l != NULL && !json_is_null(l)) {
		if (!json_is_object(l))
			return bad(shown, "launch must be an object", e);
		if (!json_is_boolean(json_object_get(l, "readable")))
			return bad(shown, "launch.readable must be true or "
			    "false", e);
		v = json_object_get(l, "exe");
		if (v != NULL && !json_is_null(v) && !json_is_string(v))
			return bad(shown, "launch.exe must be a string or "
			    "null", e);
		v = json_object_get(l, "argv");
		if (v != NULL && !json_is_null(v)) {
			if (!json_is_array(v) || json_array_size(v) == 0)
				return bad(shown, "launch.argv must be an "
				    "array of strings", e);
			json_array_foreach(v, i, d)
				if (!json_is_string(d))
					return bad(shown, "launch.argv must be "
					    "an array of strings", e);
		}
		if (json_is_true(json_object_get(l, "readable")) &&
		    (!json_is_string(json_object_get(l, "exe")) ||
		    !json_is_array(v)))
			return bad(shown, "launch is readable without exe "
			    "and argv", e);
	}
	if (s != NULL && !json_is_null(s)) {
		if (!json_is_object(s))
			return bad(shown, "summary must be an object", e);
		v = json_object_get(s, "devices");
		if (v != NULL && !json_is_array(v))
			return bad(shown, "summary.devices must be an array",
			    e);
		json_array_foreach(v, i, d)
			if (!json_is_object(d))
				return bad(shown, "summary.devices must be "
				    "objects", e);
		v = json_object_get(s, "memdevs");
		if (v != NULL && !json_is_array(v))
			return bad(shown, "summary.memdevs must be an array",
			    e);
		json_array_foreach(v, i, d)
			if (!json_is_object(d))
				return bad(shown, "summary.memdevs must be "
				    "objects", e);
	}
	return 0;
}
