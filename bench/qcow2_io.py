#!/usr/bin/env python3
"""qcow2 I/O benchmark: vmm against qemu-system-x86_64, through HMP qemu-io.

Both VMMs open the same kind of image with the same drive options and are
driven by the same client code:

    vmm -S -nodefaults -qmp unix:SOCK,server,nowait -drive file=IMG,if=none,id=d0,format=qcow2
    qemu-system-x86_64 -S -nodefaults -machine none -display none -qmp unix:SOCK,server,nowait -drive file=IMG,if=none,id=d0,format=qcow2

Every I/O is one QMP ``human-monitor-command`` running ``qemu-io d0 "..."``
(HMP's qemu-io), one request at a time inside the VMM.  To keep the client's
round trips out of the figures, the requests of a batch are pipelined: the
client writes all ``--ops`` JSON requests at once (reading replies while it
writes) and the clock runs from the first byte sent to the last reply read.
A baseline batch of the same number of ``qemu-io d0 "length"`` commands
(the same monitor and qemu-io path, no data I/O) is timed in every session
before and after the workload batches; the figures are reported per
operation raw, and net of the session's baseline (the mean of its two
baseline batches).

Workloads, each on a fresh image made by ``qemu-img create -f qcow2 IMG 1G``
("fresh": every first write allocates a cluster and its metadata) and on one
made with ``-o preallocation=metadata`` ("prealloc"):

- 4 KiB random write: ``write -q -P 0x5a OFF 4k`` at ``--ops`` distinct
  4 KiB-aligned offsets drawn with a seeded PRNG from the whole 1 GiB (the
  same offsets for both VMMs);
- 4 KiB random read: ``read -q -P 0x5a OFF 4k`` of the same offsets in
  another seeded order, in the same session right after the writes (reads of
  allocated, written data; the pattern is checked by qemu-io);
- 64 KiB sequential write: ``write -q -P 0x5a OFF 64k`` from offset 0 up, in
  a second session on another fresh image.

After each write batch one ``qemu-io d0 "flush"`` is timed on its own.  The
images use the default cache mode of -drive (writeback, no O_DIRECT), so
reads come from the host's page cache in both.  After each session the VMM
is told to ``quit`` and ``qemu-img check`` must find no errors; qemu-io's
output (the QMP reply for vmm, QEMU's stdout for QEMU, where QEMU's HMP
qemu-io prints) must show no failed request or pattern mismatch.

``--runs`` runs; in each, for each image kind, the two VMMs alternate (the
order flips from one run to the next).  Reported: the median over the runs.

Reference: ``qemu-img bench -f qcow2 -d 1`` (one request in flight) on the
same kind of fresh image: ``-w -c N -s 4096 -S 65536`` (4 KiB writes, each
into a new 64 KiB cluster: allocating, but strided rather than random),
then ``-c N -s 4096 -S 65536`` reading them back, and ``-w -c N -s 65536``
(sequential 64 KiB).  qemu-img bench is QEMU's block layer with no monitor
in the way; ``--bench-depth`` adds a run at another queue depth.

Only the Python 3 standard library is used.  Prints a markdown table; with
``--json FILE`` also writes every raw figure.
"""

import argparse
import json
import os
import random
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_control_plane import host_info, loadavg  # noqa: E402

NS = 1_000_000_000
IMAGE_SIZE = 1 << 30
PATTERN = "0x5a"
KINDS = ("fresh", "prealloc")
WORKLOADS = ("randwrite4k", "randread4k", "seqwrite64k")
WORKLOAD_LABEL = {
    "randwrite4k": "4 KiB random write",
    "randread4k": "4 KiB random read",
    "seqwrite64k": "64 KiB sequential write",
}
KIND_LABEL = {
    "fresh": "fresh 1 GiB",
    "prealloc": "preallocation=metadata",
}
# Text that qemu-io prints for a failed request or a pattern mismatch.
FAILURE_RE = re.compile(r"failed|verification|error|not found|cannot|invalid",
                        re.IGNORECASE)


class BenchError(Exception):
    pass


class Target:
    def __init__(self, name, binary, extra):
        self.name = name
        self.binary = binary
        self.extra = list(extra)

    def argv(self, sock, img):
        return [self.binary, "-S", "-nodefaults", *self.extra,
                "-qmp", "unix:%s,server,nowait" % sock,
                "-drive", "file=%s,if=none,id=d0,format=qcow2" % img]


def hmp_request(line, ident):
    return json.dumps({"execute": "human-monitor-command",
                       "arguments": {"command-line": line},
                       "id": ident}).encode() + b"\n"


class Session:
    """One started VMM with one image and one negotiated QMP connection."""

    def __init__(self, target, workdir, img, tag, timeout):
        self.target = target
        self.sock_path = os.path.join(workdir, "%s.sock" % tag)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.out_path = os.path.join(workdir, "%s.out" % tag)
        self.outfile = open(self.out_path, "w+b")
        self.argv = target.argv(self.sock_path, img)
        self.timeout = timeout
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self.outfile,
                                     stderr=subprocess.STDOUT, close_fds=True)
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if self.proc.poll() is not None:
                    raise BenchError(self.failure("exited with status %d"
                                                  % self.proc.returncode))
                if time.monotonic() > deadline:
                    self.kill()
                    raise BenchError(self.failure("no QMP socket"))
                time.sleep(0.002)
        self.sock = sock
        sock.settimeout(timeout)
        self.buf = b""
        greeting = self.readline()
        if not greeting.startswith(b'{"QMP"'):
            raise BenchError(self.failure("bad greeting %r" % greeting))
        self.greeting = json.loads(greeting)
        self.command("qmp_capabilities")
        self.next_id = 1

    def readline(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError(self.failure("connection closed"))
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self):
        while True:
            msg = json.loads(self.readline())
            if "event" not in msg:
                return msg

    def command(self, name, args=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        msg = self.reply()
        if "return" not in msg:
            raise BenchError(self.failure("%s: %r" % (name, msg)))
        return msg["return"]

    def hmp(self, line):
        """One HMP command on its own, timed (ns) and checked."""
        t0 = time.perf_counter_ns()
        text = self.command("human-monitor-command", {"command-line": line})
        dt = time.perf_counter_ns() - t0
        if FAILURE_RE.search(text):
            raise BenchError(self.failure("%s: %r" % (line, text)))
        return dt, text

    def batch(self, lines):
        """Pipeline every request, read every reply; ns from first send to last reply."""
        base = self.next_id
        self.next_id += len(lines)
        payload = b"".join(hmp_request(line, base + i) for i, line in enumerate(lines))
        want = len(lines)
        sock = self.sock
        sock.setblocking(False)
        view = memoryview(payload)
        sent = 0
        chunks = [self.buf]
        self.buf = b""
        got = chunks[0].count(b"\n")
        deadline = time.monotonic() + self.timeout + want * 0.05
        t0 = time.perf_counter_ns()
        try:
            while got < want:
                wl = [sock] if sent < len(payload) else []
                r, w, _ = select.select([sock], wl, [], 1.0)
                if w:
                    try:
                        sent += sock.send(view[sent:sent + 262144])
                    except BlockingIOError:
                        pass
                if r:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        raise BenchError(self.failure("connection closed in a batch"))
                    if data:
                        chunks.append(data)
                        got += data.count(b"\n")
                if not r and not w and time.monotonic() > deadline:
                    raise BenchError(self.failure("batch timed out, %d/%d replies"
                                                  % (got, want)))
            t1 = time.perf_counter_ns()
        finally:
            sock.setblocking(True)
            sock.settimeout(self.timeout)
        data = b"".join(chunks)
        lines_in = data.split(b"\n")
        self.buf = lines_in.pop()  # partial line, if any
        replies = [json.loads(x) for x in lines_in if x.strip()]
        events = [m for m in replies if "event" in m]
        replies = [m for m in replies if "event" not in m]
        # An event counted as a reply: read the missing replies now (untimed;
        # not expected with -S and no guest).
        while len(replies) < want:
            replies.append(self.reply())
        for i, msg in enumerate(replies):
            if msg.get("id") != base + i or "return" not in msg:
                raise BenchError(self.failure("reply %d: %r" % (i, msg)))
            if msg["return"] and FAILURE_RE.search(msg["return"]):
                raise BenchError(self.failure("%s: %r" % (lines[i], msg["return"])))
        return t1 - t0, len(events)

    def output(self):
        self.outfile.flush()
        self.outfile.seek(0)
        return self.outfile.read().decode(errors="replace")

    def failure(self, what):
        return "%s: %s; output: %s" % (" ".join(self.argv), what,
                                       self.output()[-1000:].strip() or "(empty)")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def quit(self):
        self.sock.sendall(b'{"execute": "quit"}\n')
        try:
            self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(self.failure("did not exit after quit"))
        self.sock.close()
        text = self.output()
        self.outfile.close()
        if self.proc.returncode != 0:
            raise BenchError("%s: exit status %d; output: %s"
                             % (" ".join(self.argv), self.proc.returncode, text[-1000:]))
        return text

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        try:
            self.sock.close()
        except Exception:
            pass
        if not self.outfile.closed:
            self.outfile.close()


def create_image(qemu_img, path, kind):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    argv = [qemu_img, "create", "-q", "-f", "qcow2"]
    if kind == "prealloc":
        argv += ["-o", "preallocation=metadata"]
    argv += [path, str(IMAGE_SIZE)]
    subprocess.run(argv, check=True)


def check_image(qemu_img, path):
    p = subprocess.run([qemu_img, "check", "-f", "qcow2", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.stdout.decode(errors="replace")
    # 0: clean; 3: leaked clusters only.  Leaks are allowed, corruption not.
    if p.returncode not in (0, 3) or "ERROR" in text:
        raise BenchError("qemu-img check %s: status %d\n%s" % (path, p.returncode, text))
    return {"status": p.returncode, "leaks": "leaked" in text}


def check_qemu_io_output(session, text, expect_prints):
    """QEMU's HMP qemu-io prints on QEMU's stdout; vmm answers in the reply."""
    if expect_prints:
        bad = [ln for ln in text.splitlines() if FAILURE_RE.search(ln)
               and "warning" not in ln.lower()]
        if bad:
            raise BenchError("%s: qemu-io reported: %s"
                             % (" ".join(session.argv), "; ".join(bad[:5])))


def io_lines(op, offsets, size):
    return ['qemu-io d0 "%s -q -P %s %d %s"' % (op, PATTERN, off, size) for off in offsets]


def baseline_lines(n):
    return ['qemu-io d0 "length"'] * n


def run_session(target, workdir, qemu_img, kind, args, tag, body, check_key, sizes=False):
    """One VMM session on a fresh image: warm-up, `body(session, res)`,
    quit, the qemu-io output and `qemu-img check` verified."""
    img = os.path.join(workdir, "%s.qcow2" % tag)
    create_image(qemu_img, img, kind)
    s = Session(target, workdir, img, tag, args.timeout)
    res = {}
    try:
        s.batch(baseline_lines(args.warmup))
        body(s, res)
        text = s.quit()
    finally:
        s.close()
    check_qemu_io_output(s, text, target.name == "qemu")
    res[check_key] = check_image(qemu_img, img)
    if sizes:
        res["image_bytes"] = os.path.getsize(img)
        res["image_allocated_bytes"] = os.stat(img).st_blocks * 512
    os.unlink(img)
    return res


def run_session_random(target, workdir, qemu_img, kind, write_offs, read_offs, args, tag):
    def body(s, res):
        res["baseline_ns"], _ = s.batch(baseline_lines(args.ops))
        res["randwrite4k_ns"], _ = s.batch(io_lines("write", write_offs, "4k"))
        res["randwrite4k_flush_ns"], _ = s.hmp('qemu-io d0 "flush"')
        res["randread4k_ns"], _ = s.batch(io_lines("read", read_offs, "4k"))
        res["baseline_after_ns"], _ = s.batch(baseline_lines(args.ops))
    return run_session(target, workdir, qemu_img, kind, args, tag, body, "check", sizes=True)


def run_session_seq(target, workdir, qemu_img, kind, args, tag):
    def body(s, res):
        res["baseline_seq_ns"], _ = s.batch(baseline_lines(args.ops))
        offs = [i * 65536 for i in range(args.ops)]
        res["seqwrite64k_ns"], _ = s.batch(io_lines("write", offs, "64k"))
        res["seqwrite64k_flush_ns"], _ = s.hmp('qemu-io d0 "flush"')
        res["baseline_seq_after_ns"], _ = s.batch(baseline_lines(args.ops))
    return run_session(target, workdir, qemu_img, kind, args, tag, body, "check_seq")


BENCH_RE = re.compile(r"Run completed in ([0-9.]+) seconds")


def qemu_img_bench(qemu_img, img, extra, n, depth):
    argv = [qemu_img, "bench", "-f", "qcow2", "-d", str(depth), "-c", str(n), *extra, img]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.stdout.decode(errors="replace")
    m = BENCH_RE.search(text)
    if p.returncode != 0 or not m:
        raise BenchError("%s: status %d\n%s" % (" ".join(argv), p.returncode, text))
    return int(float(m.group(1)) * NS)


def run_qemu_img_bench(qemu_img, workdir, kind, n, depth):
    img = os.path.join(workdir, "bench.qcow2")
    res = {}
    create_image(qemu_img, img, kind)
    res["randwrite4k_ns"] = qemu_img_bench(qemu_img, img, ["-w", "-s", "4096", "-S", "65536"], n, depth)
    res["randread4k_ns"] = qemu_img_bench(qemu_img, img, ["-s", "4096", "-S", "65536"], n, depth)
    create_image(qemu_img, img, kind)
    res["seqwrite64k_ns"] = qemu_img_bench(qemu_img, img, ["-w", "-s", "65536"], n, depth)
    os.unlink(img)
    return res


def version_of(binary):
    try:
        p = subprocess.run([binary, "--version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        return p.stdout.decode(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def us(ns, n):
    return ns / n / 1000.0


def fmt(v, digits=1):
    if v is None:
        return ""
    return "%.*f" % (digits, v)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True, help="path to the vmm binary")
    ap.add_argument("--qemu", default="qemu-system-x86_64",
                    help="path to qemu-system-x86_64 (default: on PATH)")
    ap.add_argument("--qemu-img", default="qemu-img",
                    help="path to qemu-img (default: on PATH)")
    ap.add_argument("--ops", type=int, default=2000,
                    help="operations per batch (default 2000)")
    ap.add_argument("--warmup", type=int, default=100,
                    help="untimed baseline commands after negotiation (default 100)")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs, each with every workload for both VMMs (default 5)")
    ap.add_argument("--seed", type=int, default=7,
                    help="seed of the random offsets (default 7)")
    ap.add_argument("--dir", default="/var/tmp",
                    help="directory on the disk to measure for images and sockets "
                         "(default /var/tmp)")
    ap.add_argument("--bench-depth", type=int, default=None,
                    help="also run qemu-img bench at this queue depth (e.g. 64, "
                         "its default)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for a start, a reply or an exit (default 60)")
    ap.add_argument("--json", help="write every raw figure to this file")
    args = ap.parse_args()

    if args.ops > IMAGE_SIZE // 65536:
        ap.error("--ops at most %d (64 KiB writes must fit the image)" % (IMAGE_SIZE // 65536))

    qemu = shutil.which(args.qemu) or args.qemu
    qemu_img = shutil.which(args.qemu_img) or args.qemu_img
    targets = {
        "vmm": Target("vmm", os.path.abspath(args.vmm), []),
        "qemu": Target("qemu", qemu, ["-machine", "none", "-display", "none"]),
    }
    rng = random.Random(args.seed)
    blocks = rng.sample(range(IMAGE_SIZE // 4096), args.ops)
    write_offs = [b * 4096 for b in blocks]
    read_offs = list(write_offs)
    rng.shuffle(read_offs)

    host = host_info()
    qemu_version = version_of(qemu)
    qemu_img_version = version_of(qemu_img)
    load_before = loadavg()
    workdir = tempfile.mkdtemp(prefix="q2b-", dir=args.dir)
    fs = "?"
    try:
        p = subprocess.run(["stat", "-f", "-c", "%T", workdir], stdout=subprocess.PIPE)
        fs = p.stdout.decode().strip()
    except OSError:
        pass
    print("images and sockets in %s (%s)" % (workdir, fs), file=sys.stderr)

    raw = {k: {t: [] for t in ("vmm", "qemu")} for k in KINDS}
    bench = {k: [] for k in KINDS}
    bench_depth = {k: [] for k in KINDS}
    vmm_greeting = qemu_greeting = None
    try:
        for r in range(args.runs):
            for ki, kind in enumerate(KINDS):
                order = ["vmm", "qemu"] if (r + ki) % 2 == 0 else ["qemu", "vmm"]
                for name in order:
                    t = targets[name]
                    res = run_session_random(t, workdir, qemu_img, kind, write_offs,
                                             read_offs, args, "%s-r" % name)
                    res.update(run_session_seq(t, workdir, qemu_img, kind, args,
                                               "%s-s" % name))
                    raw[kind][name].append(res)
                bench[kind].append(run_qemu_img_bench(qemu_img, workdir, kind, args.ops, 1))
                if args.bench_depth:
                    bench_depth[kind].append(run_qemu_img_bench(qemu_img, workdir, kind,
                                                                args.ops, args.bench_depth))
            print("run %d/%d done" % (r + 1, args.runs), file=sys.stderr)
        # The greetings, for the report.
        for name in ("vmm", "qemu"):
            img = os.path.join(workdir, "g.qcow2")
            create_image(qemu_img, img, "fresh")
            s = Session(targets[name], workdir, img, "g", args.timeout)
            try:
                v = s.greeting["QMP"]["version"]
                s.quit()
            finally:
                s.close()
            q = v["qemu"]
            text = "%d.%d.%d %s" % (q["major"], q["minor"], q["micro"], v.get("package", ""))
            if name == "vmm":
                vmm_greeting = text.strip()
            else:
                qemu_greeting = text.strip()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = loadavg()

    n = args.ops

    def med(kind, name, key):
        return statistics.median(us(x[key], n) for x in raw[kind][name])

    def base_ns(x, key):
        """The session's baseline: the mean of the batches before and after."""
        b = "baseline_seq" if key.startswith("seq") else "baseline"
        return (x[b + "_ns"] + x[b + "_after_ns"]) / 2

    def med_net(kind, name, key):
        return statistics.median(us(x[key] - base_ns(x, key), n) for x in raw[kind][name])

    summary = {}
    out = []
    out.append("Host: %s, %s CPUs, Linux %s, KVM modules: %s; Python %s" % (
        host.get("cpu", "?"), host["cpus"], host["kernel"],
        ", ".join(host["kvm_modules"]) or "none", host["python"]))
    out.append("vmm:  %s (QMP greeting version %s)" % (
        " ".join(targets["vmm"].argv("SOCK", "IMG")), vmm_greeting))
    out.append("QEMU: %s (%s; QMP greeting version %s)" % (
        " ".join(targets["qemu"].argv("SOCK", "IMG")), qemu_version, qemu_greeting))
    out.append("qemu-img: %s" % qemu_img_version)
    out.append("Images in %s (%s); load average (1 min) before %s, after %s" % (
        args.dir, fs, load_before, load_after))
    out.append("%d runs, %d ops per batch, seed %d; figures are medians over the runs, "
               "in us per operation" % (args.runs, n, args.seed))
    out.append("")
    out.append("| Workload | Image | vmm | QEMU | QEMU / vmm | vmm net | QEMU net "
               "| QEMU / vmm net | qemu-img bench -d 1 |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        v = statistics.median(us(base_ns(x, "r"), n) for x in raw[kind]["vmm"])
        q = statistics.median(us(base_ns(x, "r"), n) for x in raw[kind]["qemu"])
        summary.setdefault(kind, {})["baseline"] = {"vmm_us": v, "qemu_us": q}
        out.append("| baseline: `qemu-io d0 \"length\"` | %s | %s | %s | %.2fx | | | | |" % (
            KIND_LABEL[kind], fmt(v), fmt(q), q / v))
        for wl in WORKLOADS:
            key = wl + "_ns"
            v = med(kind, "vmm", key)
            q = med(kind, "qemu", key)
            vn = med_net(kind, "vmm", key)
            qn = med_net(kind, "qemu", key)
            b = statistics.median(us(x[key], n) for x in bench[kind])
            summary[kind][wl] = {"vmm_us": v, "qemu_us": q, "vmm_net_us": vn,
                                 "qemu_net_us": qn, "ratio": q / v,
                                 "ratio_net": qn / vn if vn > 0 else None,
                                 "qemu_img_bench_us": b}
            out.append("| %s | %s | %s | %s | %.2fx | %s | %s | %s | %s |" % (
                WORKLOAD_LABEL[wl], KIND_LABEL[kind], fmt(v), fmt(q), q / v,
                fmt(vn), fmt(qn), ("%.2fx" % (qn / vn)) if vn > 0 else "n/a", fmt(b)))
    out.append("")
    out.append("`flush` after the write batch, median (ms):")
    out.append("")
    out.append("| Batch | Image | vmm | QEMU |")
    out.append("|---|---|---:|---:|")
    for kind in KINDS:
        for wl in ("randwrite4k", "seqwrite64k"):
            key = wl + "_flush_ns"
            v = statistics.median(x[key] for x in raw[kind]["vmm"]) / 1e6
            q = statistics.median(x[key] for x in raw[kind]["qemu"]) / 1e6
            summary[kind][wl]["flush_vmm_ms"] = v
            summary[kind][wl]["flush_qemu_ms"] = q
            out.append("| %s | %s | %.2f | %.2f |" % (WORKLOAD_LABEL[wl], KIND_LABEL[kind], v, q))
    out.append("")
    out.append("Per run (us per operation, raw), vmm / QEMU:")
    out.append("")
    for kind in KINDS:
        for key in ("baseline_ns", "baseline_after_ns", "baseline_seq_ns",
                    "baseline_seq_after_ns") + tuple(w + "_ns" for w in WORKLOADS):
            vs = ", ".join(fmt(us(x[key], n)) for x in raw[kind]["vmm"])
            qs = ", ".join(fmt(us(x[key], n)) for x in raw[kind]["qemu"])
            out.append("- %s, %s: vmm %s; QEMU %s" % (
                KIND_LABEL[kind], key[:-3], vs, qs))
    if args.bench_depth:
        out.append("")
        out.append("qemu-img bench -d %d (us per operation, median): %s" % (
            args.bench_depth, "; ".join(
                "%s %s %s" % (KIND_LABEL[k], w, fmt(statistics.median(
                    us(x[w + "_ns"], n) for x in bench_depth[k]), 2))
                for k in KINDS for w in WORKLOADS)))
    print("\n".join(out))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": host, "qemu_version": qemu_version,
                       "qemu_img_version": qemu_img_version,
                       "vmm_greeting": vmm_greeting, "qemu_greeting": qemu_greeting,
                       "argv": {k: t.argv("SOCK", "IMG") for k, t in targets.items()},
                       "ops": n, "runs": args.runs, "seed": args.seed,
                       "dir": args.dir, "fs": fs,
                       "loadavg_before": load_before, "loadavg_after": load_after,
                       "summary_us_per_op": summary,
                       "raw_ns": raw, "qemu_img_bench_d1_ns": bench,
                       "qemu_img_bench_depth": args.bench_depth,
                       "qemu_img_bench_depth_ns": bench_depth,
                       "write_offsets": write_offs, "read_offsets": read_offs},
                      f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
