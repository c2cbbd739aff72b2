/*
 * blockinfo.c - query-block, flattened into what snapctl needs per disk.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "blockinfo.h"
#include "util.h"

#include "banned.h"

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

char *
blockinfo_qdev_id(const char *qdev)
{
	static const char pfx[] = "/machine/peripheral/";
	const char *p, *slash;

	if (qdev == NULL)
		return NULL;
	if (strncmp(qdev, pfx, sizeof(pfx) - 1) != 0)
		return xstrdup(qdev);
	p = qdev + sizeof(pfx) - 1;
	slash = strchr(p, '/');
	return slash != NULL ? xstrndup(p, (size_t)(slash - p)) : xstrdup(p);
}

int
blockinfo_query(struct qmp *q, struct blockinfo **out, size_t *n,
    struct err *e)
{
	struct err le = ERR_INIT;
	struct blockinfo *v = NULL, *b;
	json_t *r, *dev, *ins, *img;
	const char *device, *qdev, *node, *file, *fmt, *bk;
	size_t i, nv = 0;

	*out = NULL;
	*n = 0;
	r = qmp_execute(q, "query-block", NULL, &le);
	if (r == NULL) {
		if (e != NULL && !err_isset(e)) {
			*e = le;
			err_prefix(e, "query-block: ");
		}
		return -1;
	}
	if (!json_is_array(r)) {
		json_decref(r);
		return err_set(e, ERR_QEMU, "query-block: unexpected reply");
	}
	json_array_foreach(r, i, dev) {
		ins = json_object_get(dev, "inserted");
		if (!json_is_object(ins))
			continue;
		device = json_str(dev, "device");
		qdev = json_str(dev, "qdev");
		node = json_str(ins, "node-name");
		img = json_object_get(ins, "image");
		file = json_str(img, "filename");
		if (file == NULL)
			file = json_str(ins, "file");
		fmt = json_str(img, "format");
		if (fmt == NULL)
			fmt = json_str(ins, "drv");
		bk = json_str(img, "full-backing-filename");
		if (bk == NULL)
			bk = json_str(img, "backing-filename");
		v = xreallocarray(v, nv + 1, sizeof(*v));
		b = &v[nv++];
		b->device = xstrdup(device != NULL ? device : "");
		b->qdev = dup_or_null(qdev);
		b->node = dup_or_null(node);
		b->file = dup_or_null(file);
		b->format = dup_or_null(fmt);
		b->backing = dup_or_null(bk);
		b->ro = json_is_true(json_object_get(ins, "ro"));
		b->id = *b->device != '\0' ? xstrdup(b->device) :
		    qdev != NULL ? blockinfo_qdev_id(qdev) :
		    xstrdup(node != NULL ? node : "?");
	}
	json_decref(r);
	*out = v;
	*n = nv;
	return 0;
}

void
blockinfo_free(struct blockinfo *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(b[i].id);
		free(b[i].device);
		free(b[i].qdev);
		free(b[i].node);
		free(b[i].file);
		free(b[i].format);
		free(b[i].backing);
	}
	free(b);
}
