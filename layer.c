/*
 * layer.c - names and paths of version-2 disk layers (layer.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"
#include "manifest.h"
#include "util.h"

#include "banned.h"

char *
layer_name(const char *device, int n)
{
	char *base = xstrdup(device != NULL && *device ? device : "disk");
	char *out, *p;

	for (p = base; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			*p = '_';
	out = n > 1 ? xasprintf("%s-%d.qcow2", base, n) :
	    xasprintf("%s.qcow2", base);
	free(base);
	return out;
}

char *
layer_state_path(const char *store_dir, const char *name, const json_t *disk,
    struct err *e)
{
	const char *layer = json_str(disk, MF_DISK_LAYER);
	const char *file = json_str(disk, MF_DISK_FILE);

	if (layer != NULL)
		return xasprintf("%s/%s/%s", store_dir, name, layer);
	if (file != NULL)
		return xstrdup(file);
	err_set(e, ERR_FAIL, "checkpoint '%s': a disk names neither a layer "
	    "nor a file", name);
	return NULL;
}
