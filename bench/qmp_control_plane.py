#!/usr/bin/env python3
"""QMP control-plane benchmark: vmm against qemu-system-x86_64, same client.

Measures, for each binary, with exactly the same client code:

1. start to greeting: from just before spawning the process
   (``-nodefaults -display none -S -machine accel=kvm -qmp unix:SOCK,server,nowait``)
   until the QMP greeting line has been read from the socket; the client
   connects in a tight retry loop (a new socket per try, no sleep, a
   sched_yield() between tries).  Two series of ``--starts`` each:
   - after the host sat idle ``--gap`` seconds (binaries alternating).  After
     each greeting the client negotiates (``qmp_capabilities``), waits
     ``--settle`` seconds, reads VmRSS from /proc/PID/status (idle, paused
     with -S), sends ``quit`` and times the exit of the process;
   - back to back: each start right after the previous process of the same
     binary exited.
2. ``query-status`` round trips on one negotiated connection, strictly one
   request in flight: send one line, read the response line, repeat.  Each
   trial starts a fresh process, warms up, then runs ``--requests`` round
   trips or ``--max-seconds``, whichever ends first.  ``--trials`` trials per
   binary (binaries alternating) for each CPU placement: unpinned; client and
   server (every thread) on the first CPU; client on the first CPU and server
   on the second.

Only the Python 3 standard library is used.  Prints a markdown table; with
``--json FILE`` also writes every raw figure.
"""

import argparse
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

NS = 1_000_000_000


class StartFailed(Exception):
    pass


def percentile(values, p):
    """Nearest-rank percentile, p in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


class Target:
    def __init__(self, name, binary, accel_args):
        self.name = name
        self.binary = binary
        self.accel_args = list(accel_args)

    def argv(self, sock_path):
        return [
            self.binary,
            "-nodefaults",
            "-display", "none",
            "-S",
            *self.accel_args,
            "-qmp", "unix:%s,server,nowait" % sock_path,
        ]


class Session:
    """One started process and one QMP connection to it."""

    def __init__(self, target, workdir, start_timeout=20.0, server_cpus=None):
        self.target = target
        self.sock_path = os.path.join(workdir, "%s.sock" % target.name)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.errfile = tempfile.TemporaryFile(dir=workdir)
        argv = target.argv(self.sock_path)
        self.argv = argv
        deadline = start_timeout * NS

        # The child inherits the client's CPU affinity at fork, so every
        # thread it ever creates is confined to server_cpus.
        client_cpus = os.sched_getaffinity(0)
        if server_cpus is not None:
            os.sched_setaffinity(0, server_cpus)
        t0 = time.perf_counter_ns()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self.errfile, close_fds=True)
        finally:
            if server_cpus is not None:
                os.sched_setaffinity(0, client_cpus)
        sock = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                # Tight loop, but give the CPU to the starting process if
                # it waits for this one: on a 2-CPU host a pure spin can
                # hold it off for a whole scheduler slice (about 3 ms).
                os.sched_yield()
                if self.proc.poll() is not None:
                    raise StartFailed(self._failure("exited with status %d"
                                                    % self.proc.returncode))
                if time.perf_counter_ns() - t0 > deadline:
                    self.kill()
                    raise StartFailed(self._failure("no QMP socket after %.0f s"
                                                    % start_timeout))
        self.connect_ns = time.perf_counter_ns() - t0
        self.sock = sock
        self.rfile = sock.makefile("rb")
        sock.settimeout(start_timeout)
        try:
            greeting = self.rfile.readline()
        except socket.timeout:
            greeting = b""
        t1 = time.perf_counter_ns()
        # Blocking again: a timeout would add a poll() to every read.
        sock.settimeout(None)
        if not greeting.startswith(b'{"QMP"'):
            self.kill()
            raise StartFailed(self._failure("bad greeting %r" % greeting))
        self.greeting = json.loads(greeting)
        self.start_ns = t1 - t0

    def _failure(self, what):
        self.errfile.seek(0)
        err = self.errfile.read().decode(errors="replace").strip()
        return "%s: %s; stderr: %s" % (" ".join(self.argv), what, err or "(empty)")

    def command(self, line):
        """Send one request line (bytes), return the response line (bytes)."""
        self.sock.sendall(line)
        while True:
            resp = self.rfile.readline()
            if not resp:
                raise EOFError("connection closed by %s" % self.target.name)
            if resp.startswith(b'{"return"'):
                return resp
            if b'"error"' in resp and b'"event"' not in resp:
                raise RuntimeError("%s answered %r to %r"
                                   % (self.target.name, resp, line))
            # an event: skip it

    def negotiate(self):
        self.command(b'{"execute": "qmp_capabilities"}\n')

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    def quit(self, timeout=20.0):
        """Send quit; return ns from sending it to the process's exit."""
        t0 = time.perf_counter_ns()
        try:
            self.command(b'{"execute": "quit"}\n')
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass  # a process may close before its answer is read
        # Popen.wait(timeout) polls with growing sleeps, which would round
        # the figure up; a pidfd wakes this process when the child exits.
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            exited = poller.poll(timeout * 1000)
        finally:
            os.close(pidfd)
        if not exited:
            self.kill()
            raise RuntimeError("%s did not exit after quit" % self.target.name)
        t1 = time.perf_counter_ns()
        self.proc.wait()
        self.close()
        if self.proc.returncode != 0:
            raise RuntimeError("%s exited with status %d after quit"
                               % (self.target.name, self.proc.returncode))
        return t1 - t0

    def close(self):
        for f in (getattr(self, "rfile", None), getattr(self, "sock", None)):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.errfile.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def bench_start_idle(target, workdir, gap, settle):
    """One start after the host sat idle `gap` s; idle RSS; quit."""
    time.sleep(gap)
    s = Session(target, workdir)
    try:
        s.negotiate()
        time.sleep(settle)
        rss = s.rss_kib()
        quit_ns = s.quit()
    except BaseException:
        s.kill()
        s.close()
        raise
    return s.start_ns, s.connect_ns, rss, quit_ns, s.greeting


def bench_start_warm(target, workdir):
    """One start right after the previous process of the same binary exited."""
    s = Session(target, workdir)
    try:
        s.negotiate()
        s.quit()
    except BaseException:
        s.kill()
        s.close()
        raise
    return s.start_ns


def bench_round_trips(target, workdir, warmup, requests, max_seconds,
                      client_cpus=None, server_cpus=None):
    old = os.sched_getaffinity(0)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    try:
        s = Session(target, workdir, server_cpus=server_cpus)
        try:
            s.negotiate()
            req = b'{"execute": "query-status"}\n'
            for _ in range(warmup):
                s.command(req)
            lat = []
            append = lat.append
            command = s.command
            clock = time.perf_counter_ns
            limit = max_seconds * NS
            begin = clock()
            for _ in range(requests):
                t0 = clock()
                command(req)
                t1 = clock()
                append(t1 - t0)
                if t1 - begin > limit:
                    break
            end = clock()
            s.quit()
        except BaseException:
            s.kill()
            s.close()
            raise
    finally:
        os.sched_setaffinity(0, old)
    return {"count": len(lat), "seconds": (end - begin) / NS,
            "rate": len(lat) * NS / (end - begin), "latencies_ns": lat}


def probe_qemu(binary, workdir, candidates):
    """First accel flag set with which QEMU gets to its greeting."""
    errors = []
    for args in candidates:
        t = Target("qemu", binary, args)
        try:
            s = Session(t, workdir)
        except StartFailed as e:
            errors.append(str(e))
            continue
        s.negotiate()
        s.errfile.seek(0)
        t.stderr = s.errfile.read().decode(errors="replace").strip()
        s.quit()
        return t, errors
    return None, errors


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def host_info():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpus"] = os.cpu_count()
    info["kernel"] = platform.release()
    mods = [m for m in ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm")
            if os.path.isdir("/sys/module/" + m)]
    info["kvm_modules"] = mods
    info["python"] = platform.python_version()
    return info


def main():
    workdir = tempfile.mkdtemp(prefix="qmp-bench-")
    try:
        run(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workdir):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True, help="path to the vmm binary")
    ap.add_argument("--qemu", default="qemu-system-x86_64",
                    help="path to qemu-system-x86_64 (default: on PATH)")
    ap.add_argument("--starts", type=int, default=30,
                    help="process starts per binary (default 30)")
    ap.add_argument("--gap", type=float, default=0.2,
                    help="seconds idle before each measured start (default 0.2)")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds idle before reading VmRSS (default 0.2)")
    ap.add_argument("--trials", type=int, default=5,
                    help="round-trip trials per binary and placement (default 5)")
    ap.add_argument("--warmup", type=int, default=2000,
                    help="round trips before measuring (default 2000)")
    ap.add_argument("--requests", type=int, default=20000,
                    help="round trips per trial (default 20000)")
    ap.add_argument("--max-seconds", type=float, default=10.0,
                    help="cap on one trial's measured time (default 10)")
    ap.add_argument("--json", help="write every raw figure to this file")
    args = ap.parse_args()

    load_before = loadavg()
    qemu_version = subprocess.run([args.qemu, "--version"], capture_output=True,
                                  text=True, check=True).stdout.splitlines()[0]

    vmm = Target("vmm", os.path.abspath(args.vmm), ["-machine", "accel=kvm"])
    qemu, qemu_errors = probe_qemu(args.qemu, workdir, [
        ["-machine", "accel=kvm"],
        ["-enable-kvm"],
        ["-machine", "accel=tcg"],
    ])
    if qemu is None:
        sys.exit("QEMU does not start with any accelerator:\n" + "\n".join(qemu_errors))
    for e in qemu_errors:
        print("note: QEMU did not start: %s" % e, file=sys.stderr)
    print("QEMU runs with %s" % " ".join(qemu.accel_args), file=sys.stderr)

    targets = [vmm, qemu]
    cpus = sorted(os.sched_getaffinity(0))
    placements = [("any", "unpinned (scheduler's choice)", None, None)]
    if len(cpus) >= 2:
        placements.append(("same", "client and server on CPU %d" % cpus[0],
                           {cpus[0]}, {cpus[0]}))
        placements.append(("split", "client on CPU %d, server on CPU %d"
                           % (cpus[0], cpus[1]), {cpus[0]}, {cpus[1]}))
    res = {t.name: {"argv": t.argv("SOCK"), "start_ns": [], "connect_ns": [],
                    "warm_start_ns": [], "rss_kib": [], "quit_ns": [],
                    "trials": {p[0]: [] for p in placements}} for t in targets}

    # 1 and 3: start to greeting after the host sat idle, idle RSS, quit to
    # exit; binaries alternate.
    for i in range(args.starts):
        for t in (targets if i % 2 == 0 else targets[::-1]):
            start_ns, connect_ns, rss, quit_ns, greeting = bench_start_idle(
                t, workdir, args.gap, args.settle)
            r = res[t.name]
            r["start_ns"].append(start_ns)
            r["connect_ns"].append(connect_ns)
            r["rss_kib"].append(rss)
            r["quit_ns"].append(quit_ns)
            r["greeting"] = greeting
        print("idle start %d/%d done" % (i + 1, args.starts), file=sys.stderr)
    # 1b: back-to-back starts of one binary, no idle time between them.
    for t in targets:
        for i in range(args.starts):
            res[t.name]["warm_start_ns"].append(bench_start_warm(t, workdir))
        print("back-to-back starts of %s done" % t.name, file=sys.stderr)

    # 2: query-status round trips, per CPU placement; binaries alternate.
    for key, _, ccpus, scpus in placements:
        for i in range(args.trials):
            for t in (targets if i % 2 == 0 else targets[::-1]):
                tr = bench_round_trips(t, workdir, args.warmup, args.requests,
                                       args.max_seconds, ccpus, scpus)
                res[t.name]["trials"][key].append(tr)
                print("round trips %s, %s, trial %d: %d in %.2f s, %.0f/s"
                      % (t.name, key, i + 1, tr["count"], tr["seconds"],
                         tr["rate"]), file=sys.stderr)

    load_after = loadavg()
    summary = {}
    for t in targets:
        r = res[t.name]
        ms = [x / 1e6 for x in r["start_ns"]]
        warm = [x / 1e6 for x in r["warm_start_ns"]]
        sm = {
            "start_median_ms": statistics.median(ms),
            "start_p90_ms": percentile(ms, 90),
            "connect_median_ms": statistics.median(r["connect_ns"]) / 1e6,
            "warm_start_median_ms": statistics.median(warm),
            "warm_start_p90_ms": percentile(warm, 90),
            "rss_median_mib": statistics.median(r["rss_kib"]) / 1024.0,
            "quit_median_ms": statistics.median(r["quit_ns"]) / 1e6,
            "rtt": {},
        }
        for key, _, _, _ in placements:
            trials = r["trials"][key]
            lat_us = [x / 1e3 for tr in trials for x in tr["latencies_ns"]]
            sm["rtt"][key] = {
                "rate_median": statistics.median(tr["rate"] for tr in trials),
                "rates": [tr["rate"] for tr in trials],
                "requests": sum(tr["count"] for tr in trials),
                "lat_median_us": statistics.median(lat_us),
                "lat_p90_us": percentile(lat_us, 90),
                "lat_p99_us": percentile(lat_us, 99),
            }
        summary[t.name] = sm
    v, q = summary["vmm"], summary["qemu"]
    host = host_info()

    def ver(g):
        x = g["QMP"]["version"]
        return "%d.%d.%d %s" % (x["qemu"]["major"], x["qemu"]["minor"],
                                x["qemu"]["micro"], x.get("package", "").strip())

    out = []
    out.append("Host: %s, %s CPUs, Linux %s, KVM modules: %s; Python %s"
               % (host.get("cpu", "?"), host["cpus"], host["kernel"],
                  ", ".join(host["kvm_modules"]) or "none", host["python"]))
    out.append("vmm:  %s (QMP greeting version %s)"
               % (" ".join(vmm.argv("SOCK")), ver(res["vmm"]["greeting"])))
    out.append("QEMU: %s (%s; QMP greeting version %s)"
               % (" ".join(qemu.argv("SOCK")), qemu_version,
                  ver(res["qemu"]["greeting"])))
    out.append("Load average (1 min) before %s, after %s" % (load_before, load_after))
    for e in qemu_errors:
        out.append("QEMU did not start: %s" % e)
    if getattr(qemu, "stderr", ""):
        out.append("QEMU's stderr: %s" % qemu.stderr.replace("\n", "; "))
    out.append("%d starts per binary and series; %d round-trip trials per "
               "binary and placement, each %d `query-status` (after %d warm-up)"
               % (args.starts, args.trials, args.requests, args.warmup))
    out.append("")
    out.append("| Metric | vmm | QEMU | Ratio |")
    out.append("|---|---:|---:|---:|")

    def trow(name, a, b, fmt):
        out.append("| %s | %s | %s | %.1fx (QEMU / vmm) |"
                   % (name, fmt % a, fmt % b, b / a if a else float("inf")))

    def rrow(name, a, b):
        out.append("| %s | %.0f | %.0f | %.2fx (vmm / QEMU) |"
                   % (name, a, b, a / b if b else float("inf")))

    trow("Start to QMP greeting after %.1f s idle, median (ms)" % args.gap,
         v["start_median_ms"], q["start_median_ms"], "%.2f")
    trow("Start to QMP greeting after %.1f s idle, p90 (ms)" % args.gap,
         v["start_p90_ms"], q["start_p90_ms"], "%.2f")
    trow("Start to first accepted connect, median (ms)",
         v["connect_median_ms"], q["connect_median_ms"], "%.2f")
    trow("Start to QMP greeting back-to-back, median (ms)",
         v["warm_start_median_ms"], q["warm_start_median_ms"], "%.2f")
    trow("Start to QMP greeting back-to-back, p90 (ms)",
         v["warm_start_p90_ms"], q["warm_start_p90_ms"], "%.2f")
    trow("`quit` to process exit, median (ms)",
         v["quit_median_ms"], q["quit_median_ms"], "%.2f")
    trow("VmRSS idle with -S, median (MiB)",
         v["rss_median_mib"], q["rss_median_mib"], "%.1f")
    for key, label, _, _ in placements:
        a, b = v["rtt"][key], q["rtt"][key]
        rrow("`query-status` round trips/s, %s" % label,
             a["rate_median"], b["rate_median"])
        trow("`query-status` round trip median (us), %s" % label,
             a["lat_median_us"], b["lat_median_us"], "%.1f")
        trow("`query-status` round trip p99 (us), %s" % label,
             a["lat_p99_us"], b["lat_p99_us"], "%.1f")
    out.append("")
    for key, label, _, _ in placements:
        out.append("Round trips/s per trial, %s: vmm %s; QEMU %s"
                   % (label,
                      ", ".join("%.0f" % x for x in v["rtt"][key]["rates"]),
                      ", ".join("%.0f" % x for x in q["rtt"][key]["rates"])))
    print("\n".join(out))

    if args.json:
        for t in targets:
            for trials in res[t.name]["trials"].values():
                for tr in trials:
                    tr["latencies_ns"] = sorted(tr["latencies_ns"])
        with open(args.json, "w") as f:
            json.dump({"host": host, "qemu_version": qemu_version,
                       "loadavg": [load_before, load_after],
                       "qemu_accel": qemu.accel_args, "qemu_errors": qemu_errors,
                       "summary": summary, "raw": res}, f)


if __name__ == "__main__":
    main()
