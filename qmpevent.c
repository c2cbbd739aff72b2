/*
 * qmpevent.c - the QMP client's event queue (qmp_int.h): events read while
 * waiting for something else, kept in a ring bounded in count and in
 * memory, a flood dropping its own kind first.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qmp_int.h"
#include "util.h"

void
qmp_event_free(struct qmp_event *ev)
{
	if (ev == NULL)
		return;
	free(ev->name);
	json_decref(ev->data);
	free(ev);
}

/* An event from a message with a string "event" member. */
struct qmp_event *
qmp_evq_from_msg(const json_t *msg)
{
	struct qmp_event *ev;
	const json_t *ts, *data;

	ev = xcalloc(1, sizeof(*ev));
	ev->name = xstrdup(json_string_value(json_object_get(msg, "event")));
	data = json_object_get(msg, "data");
	if (data != NULL)
		ev->data = json_incref((json_t *)data);
	ts = json_object_get(msg, "timestamp");
	if (json_is_object(ts))
		ev->timestamp =
		    json_number_value(json_object_get(ts, "seconds")) +
		    json_number_value(json_object_get(ts, "microseconds")) /
		    1e6;
	return ev;
}

/*
 * What a parsed value holds in memory, roughly: jansson spends some 40 to
 * 90 bytes on every value and a hash table on every object, so "[{},{}]"
 * takes 70 times its text.  Over-estimates, never under.
 */
static size_t
value_cost(const json_t *j)
{
	const char *key;
	json_t *v;
	size_t i, cost = 96;

	if (json_is_object(j)) {
		cost += 160;
		json_object_foreach((json_t *)j, key, v)
			cost += strlen(key) + 1 + value_cost(v);
	} else if (json_is_array(j)) {
		for (i = 0; i < json_array_size(j); i++)
			cost += value_cost(json_array_get(j, i));
	} else if (json_is_string(j)) {
		cost += json_string_length(j) + 1;
	}
	return cost;
}

/* What an event counts against QMP_MAX_EVENT_BYTES. */
static size_t
event_cost(const struct qmp_event *ev, size_t len)
{
	return len + sizeof(*ev) + strlen(ev->name) + 1 +
	    (ev->data != NULL ? value_cost(ev->data) : 0);
}

/* Take the i-th oldest queued event out, moving the shorter side. */
struct qmp_event *
qmp_evq_take(struct qmp *q, size_t i)
{
	struct qent *base = q->evq + q->evq_head;
	struct qmp_event *ev = base[i].ev;
	size_t j;

	/* The newest of its name goes: the one before it is now. */
	for (j = i; !base[i].superseded && j-- > 0;)
		if (strcmp(base[j].ev->name, ev->name) == 0) {
			base[j].superseded = 0;
			break;
		}
	q->evq_bytes -= base[i].cost;
	if (i < q->nevents / 2) {
		memmove(base + 1, base, i * sizeof(*base));
		q->evq_head++;
	} else {
		memmove(base + i, base + i + 1,
		    (q->nevents - i - 1) * sizeof(*base));
	}
	if (--q->nevents == 0)
		q->evq_head = 0;
	return ev;
}

static void
drop_event(struct qmp *q, struct qmp_event *ev)
{
	if (!q->evq_noted) {
		qmp_trace_line(q, "<-", "(event queue full: dropping the "
		    "oldest events)");
		q->evq_noted = 1;
	}
	q->evq_dropped++;
	qmp_event_free(ev);
}

/*
 * Queue ev (read as len bytes of JSON) within QMP_MAX_EVENTS and
 * QMP_MAX_EVENT_BYTES.  Room is made by dropping the oldest event that a
 * newer one of its name supersedes, or when every queued name is distinct
 * the oldest event: a flood pushes out its own kind, and the newest event
 * of every name (a STOP, a RESUME read before the flood) stays longest.
 */
void
qmp_evq_push(struct qmp *q, struct qmp_event *ev, size_t len)
{
	struct qent *base;
	size_t cost = event_cost(ev, len), i, victim;

	if (cost > QMP_MAX_EVENT_BYTES) {
		drop_event(q, ev);
		return;
	}
	while (q->nevents > 0 && (q->nevents >= QMP_MAX_EVENTS ||
	    q->evq_bytes + cost > QMP_MAX_EVENT_BYTES)) {
		base = q->evq + q->evq_head;
		victim = 0;
		for (i = 0; i < q->nevents; i++)
			if (base[i].superseded) {
				victim = i;
				break;
			}
		drop_event(q, qmp_evq_take(q, victim));
	}
	/* ev supersedes the newest queued event of its name. */
	base = q->evq + q->evq_head;
	for (i = q->nevents; i-- > 0;)
		if (strcmp(base[i].ev->name, ev->name) == 0) {
			base[i].superseded = 1;
			break;
		}
	if (q->evq_head + q->nevents == q->evq_cap) {
		if (q->nevents < q->evq_cap / 2) {
			memmove(q->evq, q->evq + q->evq_head,
			    q->nevents * sizeof(*q->evq));
			q->evq_head = 0;
		} else {
			q->evq_cap = q->evq_cap ? q->evq_cap * 2 : 16;
			q->evq = xreallocarray(q->evq, q->evq_cap,
			    sizeof(*q->evq));
		}
	}
	base = q->evq + q->evq_head;
	base[q->nevents].ev = ev;
	base[q->nevents].cost = cost;
	base[q->nevents].superseded = 0;
	q->nevents++;
	q->evq_bytes += cost;
}

int
qmp_evq_matches(const struct qmp_event *ev, const char *name,
    const json_t *match)
{
	const char *key;
	json_t *want;

	if (name != NULL && strcmp(ev->name, name) != 0)
		return 0;
	if (match == NULL)
		return 1;
	json_object_foreach((json_t *)match, key, want) {
		if (!json_is_object(ev->data) ||
		    !json_equal(json_object_get(ev->data, key), want))
			return 0;
	}
	return 1;
}

struct qmp_event *
qmp_pop_event(struct qmp *q)
{
	if (q->nevents == 0)
		return NULL;
	q->evq_noted = 0;
	return qmp_evq_take(q, 0);
}

void
qmp_queue_stats(const struct qmp *q, struct qmp_queue_stats *st)
{
	st->events = q->nevents;
	st->bytes = q->evq_bytes;
	st->dropped = q->evq_dropped;
}

void
qmp_evq_release(struct qmp *q)
{
	size_t i;

	for (i = 0; i < q->nevents; i++)
		qmp_event_free(q->evq[q->evq_head + i].ev);
	free(q->evq);
	q->evq = NULL;
	q->nevents = q->evq_head = q->evq_cap = q->evq_bytes = 0;
}
