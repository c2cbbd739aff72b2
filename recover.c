/*
 * recover.c - ckpt_recover() (checkpoint.h): bring back a guest a killed
 * snapctl left behind, one step per function, in order: finish or undo
 * each disk swap (diskswap.h; also when QEMU is gone), cancel the
 * migration, thaw, restore the capabilities and parameters, resume, remove
 * stale staging directories, remove the recovery note.  Each step appends
 * what it did to the report's "actions".
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "checkpoint.h"
#include "diskswap.h"
#include "store.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

struct recover {
	const struct ckpt_recover_opts *o;
	struct store *store;	/* NULL without -d */
	json_t *note;		/* STORE/.recover.json, or NULL */
	struct qmp *q;
	struct qmp *agent;
	const char *sock;
	const char *agent_path;
	int was_running;	/* per the note; -1: unknown */
	json_t *rep;		/* the report */
	json_t *done;		/* its "actions" (borrowed from rep) */
};

/* Lock the store and read its note: where the VM is, what it was. */
static int
read_note(struct recover *r, struct err *e)
{
	const struct ckpt_recover_opts *o = r->o;

	r->sock = o->socket;
	r->agent_path = o->agent;
	r->was_running = -1;
	if (o->store != NULL) {
		if ((r->store = store_open(o->store, 0, e)) == NULL)
			return -1;
		if (store_lock(r->store, o->lock_wait_ms, e) < 0) {
			err_prefix(e, "a checkpoint is running: ");
			return -1;
		}
		r->note = store_note_read(r->store, e);
		if (err_isset(e))
			return -1;
	}
	if (r->note != NULL) {
		if (r->sock == NULL)
			r->sock = json_str(r->note, "socket");
		if (r->agent_path == NULL)
			r->agent_path = json_str(r->note, "agent");
		if (json_is_boolean(json_object_get(r->note, "was_running")))
			r->was_running = json_is_true(json_object_get(r->note,
			    "was_running"));
	}
	if (r->sock == NULL)
		return err_set(e, ERR_USAGE, "recover: no QMP socket: use -s%s",
		    o->store ? " (the store has no recovery note)" : "");
	return 0;
}

static const json_t *
or_null(const json_t *v)
{
	return v != NULL ? v : json_null();
}

/* Connect; the note must be about this VM. */
static int
connect_vm(struct recover *r, struct err *e)
{
	struct err le = ERR_INIT;
	const json_t *vm;
	json_t *n, *u;
	int same;

	r->q = qmp_open(r->sock, r->o->qmp_timeout_ms, &le);
	if (r->q == NULL)
		return err_propagate(e, &le, NULL);
	if (r->o->trace != NULL)
		qmp_set_trace(r->q, r->o->trace, r->o->trace_opaque);
	if (r->note == NULL)
		return 0;
	vm = json_object_get(r->note, "vm");
	n = qmp_call(r->q, "query-name", NULL, e);
	u = n ? qmp_call(r->q, "query-uuid", NULL, e) : NULL;
	same = n != NULL && u != NULL &&
	    json_equal(or_null(json_object_get(vm, "uuid")),
	    or_null(json_object_get(u, "UUID"))) &&
	    json_equal(or_null(json_object_get(vm, "name")),
	    or_null(json_object_get(n, "name")));
	json_decref(n);
	json_decref(u);
	if (err_isset(e))
		return -1;
	if (!same)
		return err_set(e, ERR_MISMATCH, "the recovery note in '%s' is "
		    "about another VM than '%s'", r->o->store, r->sock);
	return 0;
}

/* 0. Each disk swap the killed run began: finished if QEMU cut (or,
 * QEMU gone, if the guest wrote into the new overlay), else undone. */
static int
recover_swaps(struct recover *r, struct err *e)
{
	const json_t *v;
	size_t i;

	json_array_foreach(json_object_get(r->note, "swaps"), i, v)
		if (diskswap_recover(r->q, v, r->done, e) < 0)
			return -1;
	return 0;
}

/* 1. Whatever migration is pending goes. */
static int
cancel_migration(struct recover *r, struct err *e)
{
	struct vm_migration mig;

	if (vm_migration_query(r->q, &mig, e) < 0)
		return -1;
	if (!vm_migration_busy(mig.status))
		return 0;
	vm_migration_cancel(r->q, VM_CANCEL_WAIT_MS, NULL);
	json_array_append_new(r->done, json_sprintf("cancelled the migration "
	    "(was '%s')", mig.status));
	return 0;
}

/* 2. Thaw the guest's filesystems, if an agent says they are frozen. */
static int
thaw(struct recover *r, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *s;
	int frozen;

	if (r->agent_path == NULL)
		return 0;
	r->agent = qmp_open_agent(r->agent_path, r->o->qmp_timeout_ms, &le);
	if (r->agent == NULL)
		return err_propagate(e, &le, "guest agent");
	if ((s = qmp_call(r->agent, "guest-fsfreeze-status", NULL, e)) == NULL)
		return -1;
	frozen = json_is_string(s) && strcmp(json_string_value(s),
	    "frozen") == 0;
	json_decref(s);
	if (!frozen)
		return 0;
	if (qmp_do(r->agent, "guest-fsfreeze-thaw", NULL, e) < 0)
		return -1;
	json_array_append_new(r->done, json_string("thawed the filesystems"));
	return 0;
}

/*
 * 3. The capabilities and parameters the note recorded; without a note,
 * pause-before-switchover off (a guest would stop at every migration).
 */
static int
restore_settings(struct recover *r, struct err *e)
{
	const json_t *caps, *params, *cap;
	json_t *all;
	size_t i;
	int rc = 0;

	if (r->note != NULL) {
		caps = json_object_get(r->note, "capabilities");
		params = json_object_get(r->note, "parameters");
		if (json_array_size(caps) > 0) {
			if (qmp_do(r->q, "migrate-set-capabilities",
			    json_pack("{s:O}", "capabilities", caps), e) < 0)
				return -1;
			json_array_append_new(r->done, json_string("restored "
			    "the migration capabilities"));
		}
		if (json_object_size(params) > 0) {
			if (qmp_do(r->q, "migrate-set-parameters",
			    json_deep_copy(params), e) < 0)
				return -1;
			json_array_append_new(r->done, json_string("restored "
			    "the migration parameters"));
		}
		return 0;
	}
	if ((all = qmp_call(r->q, "query-migrate-capabilities", NULL,
	    e)) == NULL)
		return -1;
	json_array_foreach(all, i, cap) {
		if (strcmp(json_str(cap, "capability") ?
		    json_str(cap, "capability") : "",
		    "pause-before-switchover") != 0 ||
		    !json_is_true(json_object_get(cap, "state")))
			continue;
		if (qmp_do(r->q, "migrate-set-capabilities",
		    json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
		    "pause-before-switchover", "state", 0), e) < 0) {
			rc = -1;
			break;
		}
		json_array_append_new(r->done, json_string("turned "
		    "pause-before-switchover off"));
	}
	json_decref(all);
	return rc;
}

/* 4. Resume a guest we stopped (unless the note says it was stopped). */
static int
resume(struct recover *r, struct err *e)
{
	struct err le = ERR_INIT;
	struct vm_status st;

	if (vm_status(r->q, &st, e) < 0)
		return -1;
	if (!st.running && r->was_running != 0 && vm_stopped(&st)) {
		if (vm_resume(r->q, &le) < 0)
			return err_set(e, ERR_ATTENTION, "cannot resume the "
			    "guest (%s): %s", st.status, le.msg);
		json_array_append_new(r->done, json_sprintf("resumed the guest "
		    "(was '%s')", st.status));
	}
	if (vm_status(r->q, &st, e) < 0)
		return -1;
	if (st.status[0] != '\0')
		json_object_set_new(r->rep, "status", json_string(st.status));
	if (!st.running && r->was_running != 0)
		return err_set(e, ERR_ATTENTION, "the guest is still not "
		    "running (status '%s')", st.status[0] != '\0' ?
		    st.status : "?");
	json_object_set_new(r->rep, "running", json_boolean(st.running));
	return 0;
}

/* 5. What the killed checkpoint left in the store. */
static void
clean_stale(struct recover *r)
{
	int n;

	if (r->store == NULL)
		return;
	n = store_clean_stale(r->store);
	if (n > 0)
		json_array_append_new(r->done, json_sprintf("removed %d partial "
		    "checkpoint%s", n, n == 1 ? "" : "s"));
}

/* 6. Nothing left to recover. */
static int
remove_note(struct recover *r, struct err *e)
{
	if (r->note == NULL)
		return 0;
	if (store_note_remove(r->store, e) < 0)
		return -1;
	json_array_append_new(r->done, json_string("removed the recovery "
	    "note"));
	return 0;
}

int
ckpt_recover(const struct ckpt_recover_opts *o, json_t **report,
    struct err *e)
{
	struct recover rs, *r = &rs;
	int rc = -1;

	*report = NULL;
	memset(r, 0, sizeof(*r));
	r->o = o;
	r->rep = json_object();
	r->done = json_array();
	json_object_set_new(r->rep, "actions", r->done);
	if (read_note(r, e) < 0)
		goto out;
	if (connect_vm(r, e) < 0) {
		/* QEMU is gone: its disks must still lead to every write. */
		if (r->q == NULL && r->note != NULL) {
			struct err se = ERR_INIT;

			size_t len = strlen(e->msg);

			if (recover_swaps(r, &se) < 0)
				snprintf(e->msg + len, sizeof(e->msg) - len,
				    "; and %s", se.msg);
			else if (json_array_size(r->done) > 0)
				snprintf(e->msg + len, sizeof(e->msg) - len,
				    "; the disk swaps were recovered");
		}
		goto out;
	}
	if (recover_swaps(r, e) < 0 || cancel_migration(r, e) < 0 || thaw(r, e) < 0 ||
	    restore_settings(r, e) < 0 || resume(r, e) < 0)
		goto out;
	clean_stale(r);
	if (remove_note(r, e) < 0)
		goto out;
	*report = r->rep;
	r->rep = NULL;
	rc = 0;
out:
	json_decref(r->note);
	json_decref(r->rep);
	qmp_close(r->agent);
	qmp_close(r->q);
	store_close(r->store);
	return rc;
}
