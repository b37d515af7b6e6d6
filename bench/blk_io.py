#!/usr/bin/env python3
"""virtio-blk I/O benchmark (issue 6): vmm against qemu-system-x86_64, both
running the test guest's ``virtio-blk-bench`` workload on one raw file, with
the host's own fio on the same file as the physical limit.

Rows: 4 KiB random read and random write at queue depth 1 and 32, 1 MiB
sequential read and write at queue depth ``--seq-qd``.  Each row runs for
``--secs`` seconds of I/O (the guest's clock: its TSC, calibrated against
the PIT unless CPUID gives the frequency); boot time is not counted.

- vmm: ``-nodefaults -m 256 -kernel guest.elf -drive
  file=IMG,if=none,id=d0,format=raw,cache.direct=on,aio=native -device
  virtio-blk-pci,drive=d0,disable-legacy=on`` (the same modern-only device
  as QEMU's).
- QEMU: ``-enable-kvm -cpu host,-arch-capabilities -machine pc`` (microvm has
  no PCI bus behind ports 0xcf8/0xcfc, which the guest's driver uses) and
  ``-drive file=IMG,if=none,id=d0,format=raw,cache=none,aio=native -device
  virtio-blk-pci,drive=d0,disable-legacy=on`` (a modern-only device, 1af4:1042;
  on ``pc`` QEMU's default, and vmm's, is a transitional device, 1af4:1001).
- ``--aio threads`` gives both VMMs ``aio=threads`` instead (worker threads).
- fio: ``--filename=IMG --direct=1 --ioengine=io_uring`` (libaio if io_uring
  does not start) with the same pattern, block size, queue depth, region and
  duration, one job.

One guest boot runs every row in order; each round runs vmm, QEMU and fio
(the order rotating between rounds), ``--runs`` rounds; the table gives the
medians.  The image is created (``--size``, written through with non-zero
data so O_DIRECT reads hit allocated blocks) unless ``--image`` names one.

Only the Python 3 standard library is used.  Prints a markdown table; with
``--json FILE`` also writes every raw figure.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_control_plane import host_info, loadavg  # noqa: E402

PREFIX = "vmm-guest: "
MIB = 1 << 20


class Row:
    def __init__(self, pattern, bs, qd):
        self.pattern = pattern
        self.bs = bs
        self.qd = qd
        self.key = "%s-%d-%d" % (pattern, bs, qd)

    def label(self):
        size = "%d KiB" % (self.bs >> 10) if self.bs < MIB else "%d MiB" % (self.bs >> 20)
        kind = {"randread": "random read", "randwrite": "random write",
                "read": "sequential read", "write": "sequential write"}[self.pattern]
        return "%s %s, QD %d" % (size, kind, self.qd)

    def iops_row(self):
        return self.bs < MIB

    def guest_job(self, secs):
        return "%s:%d:%d:%ds" % (self.pattern, self.bs, self.qd, secs)


def rows(seq_qd):
    return [Row("randread", 4096, 1), Row("randwrite", 4096, 1),
            Row("randread", 4096, 32), Row("randwrite", 4096, 32),
            Row("read", MIB, seq_qd), Row("write", MIB, seq_qd)]


def vmm_argv(binary, guest, img, append, aio):
    return [binary, "-nodefaults", "-m", "256", "-kernel", guest, "-append", append,
            "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-drive", "file=%s,if=none,id=d0,format=raw,cache.direct=on,aio=%s" % (img, aio),
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


def qemu_argv(binary, guest, img, append, cpu, aio):
    cpu_args = ["-cpu", cpu] if cpu else []
    return [binary, "-enable-kvm", *cpu_args, "-machine", "pc", "-m", "256",
            "-nodefaults", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", guest, "-append", append,
            "-drive", "file=%s,if=none,id=d0,format=raw,cache=none,aio=%s" % (img, aio),
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


def parse_fields(text):
    out = {}
    for w in text.split():
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
    return out


def run_guest(argv, rws, timeout):
    """One boot running every row; returns {row key: {ops, bytes, ns}} and the
    clock line."""
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    wall = time.monotonic() - t0
    out = p.stdout.decode(errors="replace")
    lines = [ln[len(PREFIX):] for ln in out.splitlines() if ln.startswith(PREFIX)]
    if p.returncode != 1 or "ok virtio-blk-bench jobs=%d" % len(rws) not in lines:
        raise RuntimeError("%s: status %d\nstdout: %s\nstderr: %s" % (
            " ".join(argv), p.returncode, out[-2000:],
            p.stderr.decode(errors="replace")[-2000:]))
    res = {}
    clock = None
    for ln in lines:
        if not ln.startswith("virtio-blk-bench "):
            continue
        words = ln.split()
        f = parse_fields(ln)
        if "clock" in f:
            clock = f
            continue
        key = "%s-%s-%s" % (words[1], f["bs"], f["qd"])
        res[key] = {"ops": int(f["ops"]), "bytes": int(f["bytes"]), "ns": int(f["ns"])}
    return res, clock, wall


def fio_once(fio, engine, img, row, secs, region):
    argv = [fio, "--name=row", "--filename=%s" % img, "--direct=1",
            "--ioengine=%s" % engine, "--rw=%s" % row.pattern, "--bs=%d" % row.bs,
            "--iodepth=%d" % row.qd, "--size=%d" % region, "--runtime=%d" % secs,
            "--time_based", "--norandommap", "--randrepeat=0",
            "--numjobs=1", "--output-format=json"]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=secs + 60)
    if p.returncode != 0:
        raise RuntimeError("%s: status %d: %s" % (" ".join(argv), p.returncode,
                                                   p.stderr.decode(errors="replace")))
    text = p.stdout.decode(errors="replace")
    data = json.loads(text[text.index("{"):])
    job = data["jobs"][0]
    side = job["write"] if "write" in row.pattern else job["read"]
    if side.get("total_ios", side.get("io_kbytes", 0)) == 0:
        raise RuntimeError("%s: no I/O done: %s" % (" ".join(argv), text[-1000:]))
    ns = job.get("job_runtime", side["runtime"]) * 1_000_000
    return {"ops": side["total_ios"], "bytes": side["io_bytes"], "ns": ns,
            "iops": side["iops"], "bw_bytes": side["bw_bytes"]}, argv


def pick_fio_engine(fio, img):
    for engine in ("io_uring", "libaio"):
        try:
            fio_once(fio, engine, img, Row("randread", 4096, 1), 1, 64 * MIB)
            return engine
        except RuntimeError as e:
            print("fio --ioengine=%s does not work here: %s" % (engine, e), file=sys.stderr)
    sys.exit("fio runs with neither io_uring nor libaio")


def make_image(path, size):
    """A raw file of `size` bytes, every block written (non-zero data) and
    synced, so that reads with O_DIRECT hit allocated blocks."""
    chunk = bytearray(os.urandom(MIB))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            pass
        done = 0
        while done < size:
            n = min(MIB, size - done)
            chunk[0:8] = done.to_bytes(8, "little")
            os.pwrite(fd, chunk[:n], done)
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def version_of(argv):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        return p.stdout.decode(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def fs_of(path):
    try:
        p = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", path],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        return p.stdout.decode().strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def rate(r, row):
    """IOPS for 4 KiB rows, MiB/s for 1 MiB rows."""
    if row.iops_row():
        return r["ops"] * 1e9 / r["ns"]
    return r["bytes"] * 1e9 / r["ns"] / MIB


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True, help="path to the vmm binary")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--fio", default="fio")
    ap.add_argument("--guest", required=True, help="path to the test guest ELF")
    ap.add_argument("--image", help="raw image to use (default: a new one in --dir)")
    ap.add_argument("--dir", default="/var/tmp",
                    help="directory on the host disk for the image (default /var/tmp)")
    ap.add_argument("--size", type=int, default=1024, help="image size in MiB (default 1024)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--secs", type=int, default=2, help="seconds per row (default 2)")
    ap.add_argument("--seq-qd", type=int, default=8,
                    help="queue depth of the 1 MiB sequential rows (default 8)")
    ap.add_argument("--qemu-cpu", default="host,-arch-capabilities",
                    help="QEMU -cpu value; '' for QEMU's default model")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound of one boot (s)")
    ap.add_argument("--json", help="write every raw figure to this file")
    ap.add_argument("--rows", help="only these rows, 1-based and comma-separated "
                                   "(e.g. 3,4 for the QD 32 rows)")
    ap.add_argument("--aio", choices=("native", "threads"), default="native",
                    help="aio= of both VMMs' drive: native (io_uring in vmm, linux-aio in "
                         "QEMU) or threads (worker threads in both); default native")
    args = ap.parse_args()

    guest = os.path.abspath(args.guest)
    vmm_bin = os.path.abspath(args.vmm)
    rws = rows(args.seq_qd)
    if args.rows:
        rws = [rws[int(i) - 1] for i in args.rows.split(",")]
    workdir = None
    if args.image:
        img = os.path.abspath(args.image)
        region = os.path.getsize(img)
    else:
        workdir = tempfile.mkdtemp(prefix="blk-bench-", dir=args.dir)
        img = os.path.join(workdir, "disk.raw")
        region = args.size * MIB
        t0 = time.monotonic()
        make_image(img, region)
        print("image %s (%d MiB) written in %.1f s" % (img, args.size, time.monotonic() - t0),
              file=sys.stderr)
    try:
        run(args, rws, guest, vmm_bin, img, region)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, rws, guest, vmm_bin, img, region):
    append = "test=virtio-blk-bench blk-region=%d blk-bench=%s" % (
        region, ",".join(r.guest_job(args.secs) for r in rws))
    engine = pick_fio_engine(args.fio, img)
    targets = {
        "vmm": vmm_argv(vmm_bin, guest, img, append, args.aio),
        "qemu": qemu_argv(args.qemu, guest, img, append, args.qemu_cpu or None, args.aio),
    }
    res = {"vmm": [], "qemu": [], "fio": []}
    clocks = {}
    walls = {"vmm": [], "qemu": []}
    fio_argv = {}
    load_before = loadavg()
    order = ["vmm", "qemu", "fio"]
    for i in range(args.runs):
        k = i % len(order)
        for name in order[k:] + order[:k]:
            if name == "fio":
                one = {}
                for row in rws:
                    one[row.key], fio_argv[row.key] = fio_once(
                        args.fio, engine, img, row, args.secs, region)
                res["fio"].append(one)
            else:
                one, clock, wall = run_guest(targets[name], rws, args.timeout)
                res[name].append(one)
                clocks[name] = clock
                walls[name].append(wall)
        print("round %d/%d done" % (i + 1, args.runs), file=sys.stderr)
    load_after = loadavg()

    med = {n: {row.key: statistics.median(rate(r[row.key], row) for r in res[n])
               for row in rws} for n in res}
    host = host_info()
    qemu_version = version_of([args.qemu, "--version"])
    fio_version = version_of([args.fio, "--version"])
    out = []
    out.append("Host: %s, %s CPUs, Linux %s, KVM modules: %s; Python %s"
               % (host.get("cpu", "?"), host["cpus"], host["kernel"],
                  ", ".join(host["kvm_modules"]) or "none", host["python"]))
    out.append("QEMU: %s; fio: %s (--ioengine=%s)" % (qemu_version, fio_version, engine))
    out.append("Image: %s, %d MiB, on %s" % (img, region >> 20, fs_of(img)))
    out.append("Guest clock: vmm %s, QEMU %s" % (
        " ".join("%s=%s" % kv for kv in sorted((clocks.get("vmm") or {}).items())
                 if kv[0] in ("clock", "tsc_hz", "queue")),
        " ".join("%s=%s" % kv for kv in sorted((clocks.get("qemu") or {}).items())
                 if kv[0] in ("clock", "tsc_hz", "queue"))))
    out.append("Load average (1 min) before %s, after %s" % (load_before, load_after))
    out.append("vmm:  %s" % " ".join(targets["vmm"]))
    out.append("QEMU: %s" % " ".join(targets["qemu"]))
    out.append("fio:  %s" % " ".join(fio_argv[rws[-1].key]))
    out.append("%d rounds of %d s per row; vmm, QEMU and fio rotating; boots took "
               "(median) vmm %.1f s, QEMU %.1f s in all" % (
                   args.runs, args.secs, statistics.median(walls["vmm"]),
                   statistics.median(walls["qemu"])))
    out.append("")
    out.append("| Row | unit | vmm | QEMU | fio (host) | vmm / QEMU | vmm / fio | QEMU / fio |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rws:
        v, q, f = med["vmm"][row.key], med["qemu"][row.key], med["fio"][row.key]
        unit = "IOPS" if row.iops_row() else "MiB/s"
        fmt = "%.0f"
        out.append("| %s | %s | %s | %s | %s | %.2f | %.2f | %.2f |" % (
            row.label(), unit, fmt % v, fmt % q, fmt % f, v / q, v / f, q / f))
    out.append("")
    for row in rws:
        out.append("%s samples: vmm %s; QEMU %s; fio %s" % (
            row.label(),
            *(", ".join("%.0f" % rate(r[row.key], row) for r in res[n])
              for n in ("vmm", "qemu", "fio"))))
    print("\n".join(out))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": host, "qemu_version": qemu_version, "fio_version": fio_version,
                       "fio_engine": engine, "loadavg": [load_before, load_after],
                       "argv": targets, "fio_argv": fio_argv, "clocks": clocks,
                       "medians": med, "raw": res, "walls": walls}, f, indent=1)


if __name__ == "__main__":
    main()
