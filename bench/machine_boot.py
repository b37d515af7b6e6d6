#!/usr/bin/env python3
"""KVM machine benchmark: vmm against qemu-system-x86_64 booting the test guest.

Both VMMs boot the same PVH ELF (tests/guest/target/guest.elf) with -kernel,
in one run on the same machine, binaries alternating:

1. Boot: ``-m 256 -append test=serial``.  The clock starts just before the
   process is spawned.  Recorded: the time until the guest's first
   ``vmm-guest:`` line has arrived on the VMM's stdout (its COM1, ``-serial
   stdio``), and the time until the process has exited (the guest leaves
   through isa-debug-exit, status 1; a pidfd wakes the client at the exit).
   ``--runs`` runs per target, each after ``--gap`` seconds idle.
2. Memory: ``-m 512 -append test=idle``.  After the guest's ``vmm-guest:
   idle`` line and ``--settle`` seconds, /proc/PID/smaps is read.  The guest
   RAM mapping is separated from the rest: for vmm the mapping of the memfd
   named ``vmm-guest-ram``; for QEMU the largest anonymous mapping of at
   least the guest's RAM size (the RAM block).  Overhead = total Rss minus the
   Rss of the guest RAM mapping, that is the VMM's memory apart from the guest
   memory actually touched.  ``--mem-runs`` runs per target.

Targets: vmm (its own default machine, which is a PC), QEMU ``-machine
microvm,rtc=on`` (QEMU loads the PVH ELF, its qboot firmware enters it) and QEMU
``-machine pc`` (SeaBIOS and its PVH option ROM).  QEMU gets ``-enable-kvm
-cpu host,-arch-capabilities`` (what tests/guest/qemu-run.py uses; kvm_pvm
hosts abort with plain ``-cpu host``); if QEMU does not boot the guest so,
the script falls back to QEMU's default CPU model and says so.

Only the Python 3 standard library is used.  Prints a markdown table; with
``--json FILE`` also writes every raw figure.
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_control_plane import host_info, loadavg, percentile  # noqa: E402

NS = 1_000_000_000
PREFIX = b"vmm-guest: "
DEBUG_EXIT = ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


class Target:
    def __init__(self, name, label, argv_fn):
        self.name = name
        self.label = label
        self.argv_fn = argv_fn

    def argv(self, mem_mib, test):
        return self.argv_fn(mem_mib, test)


def vmm_target(binary, guest):
    def argv(mem, test):
        return [binary, "-nodefaults", "-m", str(mem), "-kernel", guest,
                "-append", "test=" + test, "-serial", "stdio", *DEBUG_EXIT]
    return Target("vmm", "vmm", argv)


def qemu_target(name, label, binary, guest, machine, cpu):
    def argv(mem, test):
        cpu_args = ["-cpu", cpu] if cpu else []
        return [binary, "-enable-kvm", "-machine", machine, *cpu_args,
                "-m", str(mem), "-nodefaults", "-display", "none",
                "-serial", "stdio", *DEBUG_EXIT,
                "-kernel", guest, "-append", "test=" + test]
    return Target(name, label, argv)


class Run:
    """One started VMM whose stdout (the guest's COM1) is read by this process."""

    def __init__(self, target, mem_mib, test):
        self.target = target
        self.argv = target.argv(mem_mib, test)
        self.errfile = tempfile.TemporaryFile()
        self.out = bytearray()
        self.first_byte_ns = None
        self.first_line_ns = None
        self.exit_ns = None
        self.lines = []
        r, w = os.pipe()
        self.t0 = time.perf_counter_ns()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=w, stderr=self.errfile,
                                         close_fds=True)
        finally:
            os.close(w)
        self.rfd = r
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.poller = select.poll()
        self.poller.register(self.rfd, select.POLLIN)
        self.poller.register(self.pidfd, select.POLLIN)
        self.eof = False

    def pump(self, timeout_s):
        """Wait up to timeout_s for output or exit; record times. False on timeout."""
        events = self.poller.poll(max(0, int(timeout_s * 1000)))
        now = time.perf_counter_ns()
        if not events:
            return False
        for fd, _ in events:
            if fd == self.rfd:
                data = os.read(self.rfd, 65536)
                if not data:
                    self.eof = True
                    self.poller.unregister(self.rfd)
                    continue
                if self.first_byte_ns is None:
                    self.first_byte_ns = now - self.t0
                start = len(self.out)
                self.out += data
                # complete lines, including ones finished by this read
                begin = self.out.rfind(b"\n", 0, start) + 1
                while True:
                    nl = self.out.find(b"\n", begin)
                    if nl < 0:
                        break
                    line = bytes(self.out[begin:nl]).rstrip(b"\r")
                    self.lines.append(line)
                    if self.first_line_ns is None and line.startswith(PREFIX):
                        self.first_line_ns = now - self.t0
                    begin = nl + 1
            elif fd == self.pidfd and self.exit_ns is None:
                self.exit_ns = now - self.t0
                self.poller.unregister(self.pidfd)
        return True

    def wait_line(self, text, timeout_s):
        """Pump until a line equal to PREFIX + text has arrived."""
        deadline = time.monotonic() + timeout_s
        want = PREFIX + text
        while want not in self.lines:
            if self.exit_ns is not None and self.eof:
                raise RuntimeError(self.failure("exited before %r" % want))
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(left):
                raise RuntimeError(self.failure("no %r after %.0f s" % (want, timeout_s)))

    def wait_exit(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while self.exit_ns is None or not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(left):
                raise RuntimeError(self.failure("did not exit after %.0f s" % timeout_s))
        self.proc.wait()
        return self.proc.returncode

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace").strip()

    def failure(self, what):
        return "%s: %s; stdout: %r; stderr: %s" % (
            " ".join(self.argv), what, bytes(self.out[-500:]), self.stderr() or "(empty)")

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s; always reaps."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self):
        self.stop()
        for fd in (self.rfd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.errfile.close()


def boot_once(target, mem_mib, timeout_s):
    run = Run(target, mem_mib, "serial")
    try:
        status = run.wait_exit(timeout_s)
        text = b"\n".join(run.lines)
        if status != 1 or PREFIX + b"ok serial" not in text or run.first_line_ns is None:
            raise RuntimeError(run.failure("exit status %d" % status))
        return {"first_line_ns": run.first_line_ns,
                "first_byte_ns": run.first_byte_ns,
                "exit_ns": run.exit_ns,
                "stderr": run.stderr()}
    finally:
        run.close()


def parse_smaps(pid):
    """List of mappings: dict with start, end, name and the kB fields."""
    maps = []
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = head[0].split("-")
                cur = {"start": int(lo, 16), "end": int(hi, 16),
                       "perms": head[1],
                       "name": head[5].strip() if len(head) > 5 else ""}
                maps.append(cur)
            elif len(head) >= 3 and head[2] == "kB":
                cur[head[0].rstrip(":")] = int(head[1])
    return maps


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def classify(m, exe):
    name = m["name"]
    if name.startswith("/memfd:vmm-guest-ram"):
        return "guest RAM (memfd)"
    if exe and name == exe:
        return "executable"
    if name.startswith("/"):
        return "shared libraries and other files"
    if name == "[heap]":
        return "heap"
    if name == "[stack]":
        return "main stack"
    if name.startswith("anon_inode:kvm"):
        return "KVM (kvm_run etc.)"
    if name.startswith("["):
        return "vdso/vvar"
    return "anonymous"


def memory_once(target, mem_mib, settle_s, timeout_s):
    run = Run(target, mem_mib, "idle")
    try:
        run.wait_line(b"idle", timeout_s)
        time.sleep(settle_s)
        pid = run.proc.pid
        if run.proc.poll() is not None:
            raise RuntimeError(run.failure("exited while idle"))
        maps = parse_smaps(pid)
        vmrss = status_kib(pid, "VmRSS")
        threads = status_kib(pid, "Threads")
        exe = os.readlink("/proc/%d/exe" % pid)
        memfd_alloc = None
        ram = []
        if target.name == "vmm":
            ram = [m for m in maps if m["name"].startswith("/memfd:vmm-guest-ram")]
            # Pages allocated in the memfd, mapped or not.
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("/memfd:vmm-guest-ram"):
                        memfd_alloc = os.stat("/proc/%d/fd/%s" % (pid, fd)).st_blocks // 2
                except OSError:
                    pass
        if not ram:
            # Anonymous RAM: QEMU's, and vmm's where the host gives memfds
            # no huge pages (vmm/src/machine/memory.rs).
            big = [m for m in maps if m["name"] == ""
                   and m["end"] - m["start"] >= mem_mib << 20]
            big.sort(key=lambda m: m["end"] - m["start"], reverse=True)
            ram = big[:1]
        if not ram:
            raise RuntimeError(run.failure("no guest RAM mapping found in smaps"))
        total_rss = sum(m.get("Rss", 0) for m in maps)
        total_pss = sum(m.get("Pss", 0) for m in maps)
        ram_rss = sum(m.get("Rss", 0) for m in ram)
        ram_pss = sum(m.get("Pss", 0) for m in ram)
        ram_ids = {id(m) for m in ram}
        parts = {}
        for m in maps:
            if id(m) in ram_ids:
                continue
            k = classify(m, exe)
            parts[k] = parts.get(k, 0) + m.get("Rss", 0)
        # Anonymous and private pages outside the guest RAM: memory this VMM
        # alone pays for (no shared library text).
        private = sum(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
                      for m in maps if id(m) not in ram_ids)
        return {"vmrss_kib": vmrss, "rss_kib": total_rss, "pss_kib": total_pss,
                "ram_rss_kib": ram_rss, "ram_pss_kib": ram_pss,
                "ram_mapping_kib": sum((m["end"] - m["start"]) >> 10 for m in ram),
                "overhead_rss_kib": total_rss - ram_rss,
                "overhead_pss_kib": total_pss - ram_pss,
                "overhead_private_kib": private,
                "memfd_allocated_kib": memfd_alloc,
                "threads": threads, "parts_kib": parts}
    finally:
        run.close()


def pick_qemu_cpu(binary, guest, machine, timeout_s, cpus):
    """First -cpu value with which QEMU boots the guest on this machine."""
    errors = []
    for cpu in cpus:
        t = qemu_target("probe", "probe", binary, guest, machine, cpu)
        try:
            r = boot_once(t, 256, timeout_s)
            return cpu, r["stderr"], errors
        except RuntimeError as e:
            errors.append(str(e))
    sys.exit("QEMU does not boot the guest with -machine %s:\n%s"
             % (machine, "\n".join(errors)))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True, help="path to the vmm binary")
    ap.add_argument("--qemu", default="qemu-system-x86_64",
                    help="path to qemu-system-x86_64 (default: on PATH)")
    ap.add_argument("--guest", required=True, help="path to the test guest ELF")
    ap.add_argument("--runs", type=int, default=20,
                    help="boots per target (default 20)")
    ap.add_argument("--mem-runs", type=int, default=5,
                    help="idle-memory runs per target (default 5)")
    ap.add_argument("--gap", type=float, default=0.2,
                    help="seconds idle before each boot (default 0.2)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds after the guest's idle line before reading "
                         "smaps (default 1)")
    ap.add_argument("--boot-mem", type=int, default=256,
                    help="guest RAM in MiB for the boot runs (default 256)")
    ap.add_argument("--idle-mem", type=int, default=512,
                    help="guest RAM in MiB for the memory runs (default 512)")
    ap.add_argument("--no-pc", action="store_true",
                    help="leave out QEMU -machine pc (about 3 s per boot here)")
    ap.add_argument("--qemu-cpu", default=None,
                    help="QEMU -cpu value; '' for QEMU's default model "
                         "(default: host,-arch-capabilities, falling back to "
                         "QEMU's default model if QEMU does not boot with it)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="bound of one run in seconds (default 60)")
    ap.add_argument("--json", help="write every raw figure to this file")
    args = ap.parse_args()

    guest = os.path.abspath(args.guest)
    vmm_bin = os.path.abspath(args.vmm)
    load_before = loadavg()
    qemu_version = subprocess.run([args.qemu, "--version"], capture_output=True,
                                  text=True, check=True).stdout.splitlines()[0]

    targets = [vmm_target(vmm_bin, guest)]
    qemu_notes = []
    machines = [("qemu-microvm", "microvm,rtc=on")]
    if not args.no_pc:
        machines.append(("qemu-pc", "pc"))
    for name, machine in machines:
        if args.qemu_cpu is None:
            cpus = ("host,-arch-capabilities", None)
        else:
            cpus = (args.qemu_cpu or None,)
        cpu, err, errors = pick_qemu_cpu(args.qemu, guest, machine, args.timeout, cpus)
        for e in errors:
            qemu_notes.append("QEMU -machine %s did not boot: %s" % (machine, e))
        if err:
            qemu_notes.append("QEMU -machine %s stderr: %s"
                              % (machine, err.replace("\n", "; ")))
        label = "QEMU %s, -cpu %s" % (machine, cpu or "(default)")
        targets.append(qemu_target(name, label, args.qemu, guest, machine, cpu))
    print("targets: %s" % "; ".join(t.label for t in targets), file=sys.stderr)

    res = {t.name: {"label": t.label,
                    "boot_argv": t.argv(args.boot_mem, "serial"),
                    "mem_argv": t.argv(args.idle_mem, "idle"),
                    "boots": [], "mem": []} for t in targets}

    # 1: boots, targets rotating so that none always follows the same one.
    for i in range(args.runs):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            time.sleep(args.gap)
            res[t.name]["boots"].append(boot_once(t, args.boot_mem, args.timeout))
        print("boot round %d/%d done" % (i + 1, args.runs), file=sys.stderr)

    # 2: idle memory.
    for i in range(args.mem_runs):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            res[t.name]["mem"].append(memory_once(t, args.idle_mem, args.settle,
                                                  args.timeout))
        print("memory round %d/%d done" % (i + 1, args.mem_runs), file=sys.stderr)
    load_after = loadavg()

    summary = {}
    for t in targets:
        r = res[t.name]
        first = [b["first_line_ns"] / 1e6 for b in r["boots"]]
        byte = [b["first_byte_ns"] / 1e6 for b in r["boots"]]
        ex = [b["exit_ns"] / 1e6 for b in r["boots"]]
        med = lambda key: statistics.median(m[key] for m in r["mem"]) / 1024.0
        parts = {}
        for m in r["mem"]:
            for k, v in m["parts_kib"].items():
                parts.setdefault(k, []).append(v)
        summary[t.name] = {
            "first_median_ms": statistics.median(first),
            "first_p90_ms": percentile(first, 90),
            "first_min_ms": min(first),
            "first_byte_median_ms": statistics.median(byte),
            "exit_median_ms": statistics.median(ex),
            "exit_p90_ms": percentile(ex, 90),
            "rss_mib": med("rss_kib"),
            "ram_rss_mib": med("ram_rss_kib"),
            "overhead_mib": med("overhead_rss_kib"),
            "overhead_max_mib": max(m["overhead_rss_kib"] for m in r["mem"]) / 1024.0,
            "overhead_pss_mib": med("overhead_pss_kib"),
            "overhead_private_mib": med("overhead_private_kib"),
            "ram_mapping_mib": med("ram_mapping_kib"),
            "memfd_allocated_mib": (statistics.median(m["memfd_allocated_kib"] for m in r["mem"]) / 1024.0
                                    if r["mem"] and r["mem"][0]["memfd_allocated_kib"] is not None else None),
            "threads": statistics.median(m["threads"] for m in r["mem"]),
            "parts_mib": {k: statistics.median(v) / 1024.0 for k, v in parts.items()},
        }

    host = host_info()
    out = []
    out.append("Host: %s, %s CPUs, Linux %s, KVM modules: %s; Python %s"
               % (host.get("cpu", "?"), host["cpus"], host["kernel"],
                  ", ".join(host["kvm_modules"]) or "none", host["python"]))
    out.append("QEMU: %s" % qemu_version)
    out.append("Load average (1 min) before %s, after %s" % (load_before, load_after))
    for t in targets:
        out.append("%s boot:   %s" % (t.label, " ".join(res[t.name]["boot_argv"])))
        out.append("%s memory: %s" % (t.label, " ".join(res[t.name]["mem_argv"])))
    for n in qemu_notes:
        out.append(n)
    out.append("%d boots per target (after %.1f s idle each); %d idle-memory runs "
               "per target (smaps read %.1f s after the guest's idle line)"
               % (args.runs, args.gap, args.mem_runs, args.settle))
    out.append("")
    names = [t.name for t in targets]
    qemus = names[1:]
    hdr = "| Metric | " + " | ".join(res[n]["label"] for n in names) + " | " + \
        " | ".join("%s / vmm" % res[n]["label"].split(",")[0] for n in qemus) + " |"
    out.append(hdr)
    out.append("|---|" + "---:|" * (len(names) + len(qemus)))
    v = summary["vmm"]

    def row(label, key, fmt, ratio=True):
        cells = [fmt % summary[n][key] for n in names]
        rat = [("%.1fx" % (summary[n][key] / v[key])) if ratio and v[key] else "" for n in qemus]
        out.append("| %s | %s | %s |" % (label, " | ".join(cells), " | ".join(rat)))

    row("Start to first guest line, median (ms)", "first_median_ms", "%.1f")
    row("Start to first guest line, p90 (ms)", "first_p90_ms", "%.1f")
    row("Start to first guest line, min (ms)", "first_min_ms", "%.1f")
    row("Start to first byte on serial, median (ms)", "first_byte_median_ms", "%.1f")
    row("Start to process exit, median (ms)", "exit_median_ms", "%.1f")
    row("Start to process exit, p90 (ms)", "exit_p90_ms", "%.1f")
    row("Idle, -m %d: total RSS, median (MiB)" % args.idle_mem, "rss_mib", "%.1f")
    row("Idle: Rss of the guest RAM mapping (MiB)", "ram_rss_mib", "%.2f", False)
    row("Idle: **overhead** = RSS - guest RAM Rss, median (MiB)", "overhead_mib", "%.2f")
    row("Idle: overhead, max over runs (MiB)", "overhead_max_mib", "%.2f")
    row("Idle: overhead in PSS (shared pages divided) (MiB)", "overhead_pss_mib", "%.2f")
    row("Idle: overhead, private pages only (MiB)", "overhead_private_mib", "%.2f")
    row("Idle: threads", "threads", "%d", False)
    out.append("")
    for n in names:
        s = summary[n]
        extra = ""
        if s["memfd_allocated_mib"] is not None:
            extra = "; memfd pages allocated %.2f MiB" % s["memfd_allocated_mib"]
        out.append("%s: guest RAM mapping %.0f MiB%s; overhead RSS by kind (MiB): %s"
                   % (res[n]["label"], s["ram_mapping_mib"], extra,
                      ", ".join("%s %.2f" % (k, x) for k, x in
                                sorted(s["parts_mib"].items(), key=lambda kv: -kv[1]))))
    for n in names:
        out.append("%s first-line samples (ms): %s" % (
            res[n]["label"], ", ".join("%.1f" % (b["first_line_ns"] / 1e6)
                                       for b in res[n]["boots"])))
    print("\n".join(out))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": host, "qemu_version": qemu_version,
                       "loadavg": [load_before, load_after], "notes": qemu_notes,
                       "summary": summary, "raw": res}, f, indent=1)


if __name__ == "__main__":
    main()
