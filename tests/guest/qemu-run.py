#!/usr/bin/env python3
"""Runs the test guest under QEMU: every test on every machine, checks the
result, and measures the time from process start to the first guest line.

    tests/guest/qemu-run.py                       # every test on pc and microvm
    tests/guest/qemu-run.py -m q35 -t smp -t nmi -v
    tests/guest/qemu-run.py -m microvm -t serial -n 20    # timing
    tests/guest/qemu-run.py --qemu target/debug/vmm --cpu host -m pc

vmm takes the same command line, so --qemu may name it. "first line" is
the time from process start to the guest's first `vmm-guest:` line.
Needs python3 and qemu-system-x86 (Debian), nothing else.
"""
import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST = os.path.join(HERE, "target", "guest.elf")
PREFIX = "vmm-guest: "

MACHINES = {
    "pc": ["-machine", "pc"],
    "q35": ["-machine", "q35"],
    # microvm has no RTC or i8042 unless asked for.
    "microvm": ["-machine", "microvm,rtc=on", "-device", "i8042"],
}
TESTS = ["serial", "rtc", "nmi", "smp", "count", "idle", "reset", "acpi-shutdown", "fault"]


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.s.makefile("rw")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        return json.loads(self.f.readline())

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = self._read()
            if "return" in r or "error" in r:
                return r

    def close(self):
        self.s.close()


def run(machine, test, args, extra_append=""):
    """One QEMU run; returns a dict with ok, status, first-line time..."""
    tmp = tempfile.mkdtemp(prefix="vmm-guest-")
    sock = os.path.join(tmp, "qmp.sock")
    smp = "4" if "smp" in test else "1"
    cmd = [args.qemu, "-enable-kvm", "-cpu", args.cpu, "-m", "256M", "-smp", smp,
           *MACHINES[machine], "-nodefaults", "-display", "none", "-serial", "stdio",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
           "-qmp", f"unix:{sock},server=on,wait=off",
           "-kernel", GUEST, "-append", f"test={test} timeout={args.timeout}{extra_append}"]
    lines = queue.Queue()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)

    def reader():
        for raw in p.stdout:
            lines.put((time.monotonic() - t0, raw.decode(errors="replace").rstrip("\r\n")))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    out, first, ok, note, qmp = [], None, None, "", None
    deadline = t0 + args.timeout + 20
    try:
        while True:
            try:
                item = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                note = "timed out"
                break
            if item is None:
                break
            t, line = item
            out.append(line)
            if not line.startswith(PREFIX):
                continue
            if first is None:
                first = t
            msg = line[len(PREFIX):]
            if msg.startswith("nmi waiting"):
                qmp = qmp or Qmp(sock, deadline)
                qmp.cmd("inject-nmi")
            elif msg.startswith("count addr="):
                addr = int(msg.split("addr=")[1].split()[0], 16)
                qmp = qmp or Qmp(sock, deadline)
                vals = []
                for _ in range(2):
                    time.sleep(0.1)
                    f = os.path.join(tmp, "mem")
                    qmp.cmd("pmemsave", val=addr, size=8, filename=f)
                    vals.append(int.from_bytes(open(f, "rb").read(), "little"))
                ok = vals[1] > vals[0] > 0
                note = f"counter {vals[0]} -> {vals[1]} in 0.1 s"
                qmp.cmd("quit")
            elif msg == "idle":
                qmp = qmp or Qmp(sock, deadline)
                def cpu():
                    st = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
                c0, w0 = cpu(), time.monotonic()
                time.sleep(1.0)
                alive = p.poll() is None
                use = (cpu() - c0) / (time.monotonic() - w0)
                ok = alive
                note = f"alive after 1 s, VMM process CPU use {use * 100:.1f}%"
                qmp.cmd("quit")
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if qmp:
            qmp.close()
        err = p.stderr.read().decode(errors="replace")
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - t0
    status = p.returncode
    text = "\n".join(out)
    if ok is None:
        if test == "acpi-shutdown":
            ok = status == 0 and "fail " not in text
        elif test == "fault":
            ok = status == 7 and f"{PREFIX}fault #PF" in text
        elif test == "reset":
            ok = status == 1 and f"{PREFIX}ok reset rebooted" in text
        else:
            ok = status == 1 and f"{PREFIX}ok {test}" in text
    return {"ok": ok, "status": status, "first": first, "total": total, "note": note,
            "out": text, "err": err, "cmd": cmd}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--machine", action="append", choices=list(MACHINES))
    ap.add_argument("-t", "--test", action="append", choices=TESTS)
    ap.add_argument("-n", "--repeat", type=int, default=1, help="runs per cell (timing)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--timeout", type=int, default=5, help="guest timeout= (seconds)")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"))
    # kvm_pvm hosts reject QEMU's MSR_IA32_ARCH_CAPABILITIES with plain -cpu host.
    ap.add_argument("--cpu", default=os.environ.get("QEMU_CPU", "host,-arch-capabilities"))
    args = ap.parse_args()
    if not os.path.exists(GUEST):
        sys.exit(f"{GUEST} missing: run tests/guest/build.sh")
    failed = 0
    print(f"{'machine':8} {'test':14} {'result':6} {'first line ms (min/median)':28} {'total ms':9} note")
    for m in args.machine or ["pc", "microvm"]:
        for t in args.test or TESTS:
            rs = [run(m, t, args) for _ in range(args.repeat)]
            ok = all(r["ok"] for r in rs)
            failed += not ok
            firsts = [r["first"] * 1000 for r in rs if r["first"] is not None]
            ft = f"{min(firsts):.0f} / {statistics.median(firsts):.0f}" if firsts else "-"
            tot = statistics.median(r["total"] * 1000 for r in rs)
            print(f"{m:8} {t:14} {'ok' if ok else 'FAIL':6} {ft:28} {tot:9.0f} {rs[-1]['note']}")
            if args.verbose or not ok:
                r = next((r for r in rs if not r["ok"]), rs[-1])
                print("   $", " ".join(r["cmd"]))
                print("   status", r["status"])
                for line in (r["out"] + "\n" + r["err"]).strip().splitlines():
                    print("   |", line)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
