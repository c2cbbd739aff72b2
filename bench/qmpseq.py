#!/usr/bin/env python3
"""bench/qmpseq.py - QEMU's own tools, scripted as tightly as a person would
script them on one QMP connection (python3 standard library only), as the
baselines the benchmarks put snapctl beside.  Each prints one JSON object
with host wall-clock times (time.time(), the clock QMP event timestamps use)
as integer microseconds (*_us) and durations in seconds (*_s).

  qmpseq.py save SOCKET URI BANDWIDTH DOWNTIME_MS OVERLAY_PREFIX
      The plain live checkpoint: migrate-set-parameters max-bandwidth and
      downtime-limit (put back afterwards), "events" on, migrate to URI
      with the guest running, wait for the MIGRATION "completed" event,
      then at once one transaction of blockdev-snapshot-sync on every
      writable disk (overlay OVERLAY_PREFIX-DEVICE.qcow2), then cont.
  qmpseq.py load SOCKET URI
      A destination started with -incoming defer -S: "events" on,
      migrate-incoming URI, wait for "completed", cont, wait for RESUME.
      t0 is taken before connecting, so the connection is in the time.

Exit status 0, or 1 with a message on stderr.
"""
import json
import socket
import sys
import time


class QMP:
    def __init__(self, path, timeout=600):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rwb", buffering=0)
        self.events = []
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\r\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"].get("desc")))
            return r["return"]

    def wait_event(self, pred, timeout):
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if pred(ev):
                    del self.events[: i + 1]
                    return ev
            self.events.clear()
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError("timed out waiting for an event")
            self.s.settimeout(left)
            r = self._read()
            if "event" in r:
                self.events.append(r)


def us(t):
    """Wall-clock seconds as integer microseconds (exact in any JSON tool)."""
    return int(round(t * 1e6))


def evtime(ev):
    ts = ev["timestamp"]
    return ts["seconds"] + ts["microseconds"] / 1e6


def mig_event(status):
    def pred(ev):
        if ev["event"] != "MIGRATION":
            return False
        st = ev["data"]["status"]
        if st in ("failed", "cancelled"):
            raise RuntimeError("migration " + st)
        return st == status
    return pred


def set_events_cap(q, on):
    q.cmd("migrate-set-capabilities",
          {"capabilities": [{"capability": "events", "state": on}]})


def had_events_cap(q):
    for c in q.cmd("query-migrate-capabilities"):
        if c["capability"] == "events":
            return c["state"]
    return False


def save(sock, uri, bw, downtime, prefix):
    q = QMP(sock)
    params = q.cmd("query-migrate-parameters")
    had_events = had_events_cap(q)
    # Every writable disk, by its current top node (snapctl's overlays and
    # earlier runs' move it).
    nodes = []
    for b in q.cmd("query-block"):
        ins = b.get("inserted")
        if not ins or ins.get("ro"):
            continue
        dev = (b.get("qdev") or b.get("device") or "disk").rsplit("/", 1)[-1]
        if dev == "virtio-backend":
            dev = b["qdev"].split("/")[-2]
        nodes.append((dev, ins["node-name"]))
    if not nodes:
        raise RuntimeError("no writable disk")
    set_events_cap(q, True)
    q.cmd("migrate-set-parameters",
          {"max-bandwidth": bw, "downtime-limit": downtime})
    try:
        t0 = time.time()
        q.cmd("migrate", {"uri": uri})
        q.wait_event(mig_event("completed"), 600)
        t_done = time.time()
        actions = [{"type": "blockdev-snapshot-sync",
                    "data": {"node-name": node,
                             "snapshot-file": "%s-%s.qcow2" % (prefix, dev),
                             "snapshot-node-name": "%s-%s" % (
                                 prefix.rsplit("/", 1)[-1], dev),
                             "format": "qcow2"}}
                   for dev, node in nodes]
        q.cmd("transaction", {"actions": actions})
        t_cut = time.time()
        q.cmd("cont")
        t_cont = time.time()
        mig = q.cmd("query-migrate")
    except (OSError, RuntimeError):
        # Leave the guest running, as found.
        try:
            if q.cmd("query-status").get("status") != "running":
                q.cmd("cont")
        except (OSError, RuntimeError):
            pass
        raise
    finally:
        q.cmd("migrate-set-parameters",
              {"max-bandwidth": params["max-bandwidth"],
               "downtime-limit": params["downtime-limit"]})
        if not had_events:
            set_events_cap(q, False)
    print(json.dumps({"t0_us": us(t0), "completed_us": us(t_done),
                      "cut_us": us(t_cut), "cont_us": us(t_cont),
                      "total_s": round(t_cont - t0, 6),
                      "qemu_downtime_ms": mig.get("downtime"),
                      "disks": len(nodes)}))


def load(sock, uri):
    t0 = time.time()
    q = QMP(sock)
    set_events_cap(q, True)
    q.cmd("migrate-incoming", {"uri": uri})
    q.wait_event(mig_event("completed"), 600)
    t_done = time.time()
    q.cmd("cont")
    ev = q.wait_event(lambda e: e["event"] == "RESUME", 60)
    st = q.cmd("query-status")
    if st.get("status") != "running":
        raise RuntimeError("status %s after cont" % st.get("status"))
    print(json.dumps({"t0_us": us(t0), "completed_us": us(t_done),
                      "resume_us": us(evtime(ev)),
                      "load_s": round(t_done - t0, 6),
                      "total_s": round(evtime(ev) - t0, 6)}))


def main(argv):
    try:
        if len(argv) == 7 and argv[1] == "save":
            save(argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6])
        elif len(argv) == 4 and argv[1] == "load":
            load(argv[2], argv[3])
        else:
            sys.stderr.write(__doc__)
            return 2
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        sys.stderr.write("qmpseq %s: %s\n" % (argv[1], e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
