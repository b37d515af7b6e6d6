//! virtio-blk-pci end to end: the test guest's polled driver against a raw
//! image, checked on the host side (and with qemu-img / qemu-io where
//! installed), and hostile virtqueues that must leave vmm answering QMP.

use serde_json::json;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vmm_tests::{guest_args, wait_for_text, TempDir, VmmProcess};

fn start(test: &str, image: &Path, serial_log: &Path, extra_device: &str) -> VmmProcess {
    let drive = format!("file={},if=none,id=d0,format=raw", image.display());
    let device = format!("virtio-blk-pci,drive=d0,serial=vmm-disk-1{extra_device}");
    let args = guest_args(
        &format!("{test},idle"),
        serial_log,
        &["-drive", &drive, "-device", &device],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    VmmProcess::start(&args)
}

/// Runs guest test `test` against a 1 MiB disk (`device_opts` added to
/// the device) and returns COM1's text once the test passed or failed.
fn guest_test_output(test: &str, device_opts: &str) -> String {
    let dir = TempDir::new("vblk-test");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let _vmm = start(test, &img, &serial, device_opts);
    let ok = format!("ok {test}");
    wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains(&ok) || l.contains("fail")
    })
}

/// The whole file holds the benchmark workload's write pattern,
/// `(i % 256) * 7 + 3` at byte i.
fn assert_holds_the_write_pattern(img: &Path) {
    let data = std::fs::read(img).expect("image");
    for (i, b) in data.iter().enumerate() {
        assert_eq!(*b, (i as u8).wrapping_mul(7).wrapping_add(3), "byte {i}");
    }
}

fn make_image(dir: &Path, size: usize) -> PathBuf {
    let img = dir.join("disk.raw");
    let mut data = vec![0u8; size];
    data[..16].copy_from_slice(b"vmm-test-disk!!!");
    std::fs::write(&img, &data).expect("image");
    img
}

#[test]
fn the_guest_reads_and_writes_a_raw_image() {
    let dir = TempDir::new("vblk");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let vmm = start("virtio-blk", &img, &serial, "");
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk serial=vmm-disk-1"), "{out}");
    // Indirect descriptor tables work both ways.
    assert!(out.contains("virtio-blk indirect=ok"), "{out}");
    // QEMU's geometry guess for a blank 1 MiB disk: 16 heads, 63
    // sectors, and the minimum of 2 cylinders.
    assert!(out.contains("virtio-blk geometry=2/16/63"), "{out}");
    // The device keeps the guess, as QEMU's realize does.
    let block = c.ok("query-block", json!({}));
    let qdev = block[0]["qdev"].as_str().expect("qdev").to_string();
    let cyls = c.ok("qom-get", json!({"path": qdev, "property": "cyls"}));
    assert_eq!(cyls, 2);
    // Capacity in sectors, and sector 0 as the host wrote it.
    assert!(
        out.contains("capacity=2048 sector0=766d6d2d746573742d6469736b212121"),
        "{out}"
    );
    // What the guest wrote is in the host file (it flushed).
    let data = std::fs::read(&img).expect("image");
    for i in 0..4096 {
        assert_eq!(
            data[8 * 512 + i],
            (i as u8).wrapping_mul(7).wrapping_add(3),
            "byte {i}"
        );
    }
    // query-pci shows the device the guest drove: QEMU's default on pc,
    // a transitional device with the legacy registers in I/O BAR 0 (the
    // guest's modern driver leaves I/O decoding on, as firmware does).
    let blk = virtio_blk_function(&mut c, 0x1001);
    assert_eq!(blk["slot"], 2);
    assert_eq!(blk["class_info"]["class"], 0x0100, "{blk}");
    let regions = blk["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 3, "{blk}");
    assert_eq!(
        regions[0],
        json!({"bar": 0, "type": "io", "address": 0xc000, "size": 128})
    );
    assert_eq!(regions[1]["bar"], 1, "{blk}");
    assert_eq!(regions[2]["bar"], 4, "{blk}");
    assert!(
        qtree_text(&mut c).contains("pci id 1af4:1001 (sub 1af4:0002)"),
        "subsystem"
    );
    assert_eq!(disable_legacy(&mut c), "off");
}

/// query-pci's virtio-blk function with device ID `device`.
fn virtio_blk_function(c: &mut vmm_tests::QmpClient, device: u16) -> serde_json::Value {
    let pci = c.ok("query-pci", json!({}));
    pci[0]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["id"] == json!({"device": device, "vendor": 0x1af4}))
        .unwrap_or_else(|| panic!("no 1af4:{device:04x} in {pci}"))
        .clone()
}

fn qtree_text(c: &mut vmm_tests::QmpClient) -> String {
    let out = c.ok(
        "human-monitor-command",
        json!({"command-line": "info qtree"}),
    );
    out.as_str().expect("text").to_string()
}

/// qom-get of `start`'s virtio-blk-pci's `disable-legacy`, as realize
/// left it.
fn disable_legacy(c: &mut vmm_tests::QmpClient) -> serde_json::Value {
    // After the guest's isa-debug-exit.
    let path = "/machine/peripheral-anon/device[1]";
    assert_eq!(
        c.ok("qom-get", json!({"path": path, "property": "type"})),
        "virtio-blk-pci"
    );
    c.ok(
        "qom-get",
        json!({"path": path, "property": "disable-legacy"}),
    )
}

#[test]
fn disable_legacy_on_gives_the_modern_only_device() {
    let dir = TempDir::new("vblk-modern");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let vmm = start("virtio-blk", &img, &serial, ",disable-legacy=on");
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk serial=vmm-disk-1"), "{out}");
    let blk = virtio_blk_function(&mut c, 0x1042);
    let bars: Vec<_> = blk["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["bar"].clone())
        .collect();
    assert_eq!(bars, [json!(1), json!(4)], "{blk}");
    // QEMU's PCI default subsystem: the virtio device ID is only for
    // legacy and transitional devices.
    assert!(
        qtree_text(&mut c).contains("pci id 1af4:1042 (sub 1af4:1100)"),
        "subsystem"
    );
    assert_eq!(disable_legacy(&mut c), "on");
}

/// The guest's `virtio-blk-legacy` test against the device `extra`
/// makes: a legacy driver through I/O BAR 0, whose writes reach the file.
fn legacy_driver_reads_and_writes(extra: &str) {
    let dir = TempDir::new("vblk-legacy");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let vmm = start("virtio-blk-legacy", &img, &serial, extra);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk-legacy") || l.contains("fail")
    });
    assert!(
        out.contains("ok virtio-blk-legacy device-status=0x7"),
        "{out}"
    );
    // With interrupts suppressed, NOTIFY_ON_EMPTY still interrupts once
    // the queue runs dry; without it, nothing.
    assert!(out.contains("notify-on-empty=false isr=0"), "{out}");
    assert!(out.contains("notify-on-empty=true isr=1"), "{out}");
    // BAR 0 where query-pci has it; the device's size fixes the queue's.
    // Offered: the device's low 32 bits (seg_max, geometry, blk_size, flush,
    // topology, config_wce, discard, write_zeroes, indirect_desc,
    // event_idx) and what
    // QEMU's transport adds (notify_on_empty, any_layout, bad_feature);
    // the guest kept flush and any_layout.
    let blk = virtio_blk_function(&mut c, 0x1001);
    let io = blk["regions"][0]["address"].as_u64().expect("BAR 0");
    assert!(
        out.contains(&format!(
            "io={io:#x} features=0x79006e54 guest-features=0x8000200 queue=128 \
             capacity=2048 sector0=766d6d2d746573742d6469736b212121 status=0"
        )),
        "{out}"
    );
    // What the guest wrote is in the host file (it flushed).
    let data = std::fs::read(&img).expect("image");
    for i in 0..4096 {
        assert_eq!(
            data[16 * 512 + i],
            (i as u8).wrapping_mul(13).wrapping_add(5),
            "byte {i}"
        );
    }
}

#[test]
fn a_legacy_driver_drives_the_default_device_through_io_bar_0() {
    legacy_driver_reads_and_writes("");
}

#[test]
fn disable_legacy_off_is_the_transitional_device() {
    legacy_driver_reads_and_writes(",disable-legacy=off");
}

#[test]
fn data_written_by_qemu_io_reads_back_in_the_guest() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        panic!("qemu-io is missing: scripts/setup.sh installs qemu-utils");
    }
    let dir = TempDir::new("vblk-qio");
    let img = make_image(dir.path(), 1 << 20);
    let st = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 512"])
        .arg(&img)
        .output()
        .expect("qemu-io");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let serial = dir.path().join("com1.log");
    let mut vmm = start("virtio-blk", &img, &serial, "");
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(
        out.contains(&format!("sector0={}", "5a".repeat(16))),
        "{out}"
    );
    // While vmm runs it holds the image's write lock, as QEMU does.
    let locked = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512"])
        .arg(&img)
        .output()
        .expect("qemu-io");
    assert!(String::from_utf8_lossy(&locked.stderr).contains("Failed to get \"write\" lock"));
    c.ok("quit", json!({}));
    assert_eq!(vmm.wait_exit().code(), Some(0));
    // And qemu-io reads what the guest wrote.
    let st = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read -v 4096 16"])
        .arg(&img)
        .output()
        .expect("qemu-io");
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("03 0a 11 18 1f 26 2d 34"),
        "{text} {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn hostile_virtqueues_mark_the_device_broken_and_vmm_answers_qmp() {
    let dir = TempDir::new("vblk-hostile");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let vmm = start("virtio-hostile", &img, &serial, "");
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-hostile") || l.contains("fail")
    });
    assert!(out.contains("outside-ram -> status 0x4f"), "{out}");
    assert!(out.contains("loop -> status 0x4f"), "{out}");
    assert!(out.contains("ok virtio-hostile"), "{out}");
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}

#[test]
fn block_resize_reaches_the_guest_as_a_config_change() {
    let dir = TempDir::new("vblk-resize");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let vmm = start("virtio-resize", &img, &serial, "");
    let mut c = vmm.qmp();
    wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("virtio-resize capacity=2048")
    });
    c.ok("block_resize", json!({"device": "d0", "size": 2 << 20}));
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-resize") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-resize capacity=4096"), "{out}");
    assert_eq!(std::fs::metadata(&img).expect("image").len(), 2 << 20);
}

/// The guest's throughput workload (what bench/run-blk.sh measures), with
/// small op counts: random and sequential reads and writes at queue depths
/// 1, 8 and 32 on one queue. Every write carries the byte pattern
/// `(i % 256) * 7 + 3`, and the last job writes the whole 1 MiB disk
/// sequentially, so the host file must hold that pattern afterwards.
#[test]
fn the_guest_benchmark_workload_runs_with_requests_in_flight() {
    let dir = TempDir::new("vblk-bench");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let jobs =
        "randread:4k:1:64,randwrite:4k:32:256,randread:4k:32:256,read:64k:8:32,write:64k:8:16";
    // guest_args puts its first argument after `test=`: the rest of the
    // command line rides along.
    let args = guest_args(
        &format!("virtio-blk-bench,idle blk-bench={jobs}"),
        &serial,
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk-bench") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk-bench jobs=5"), "{out}");
    assert!(out.contains("clock="), "{out}");
    for (job, ops, bytes) in [
        ("randread bs=4096 qd=1", 64, 64 * 4096),
        ("randwrite bs=4096 qd=32", 256, 256 * 4096),
        ("randread bs=4096 qd=32", 256, 256 * 4096),
        ("read bs=65536 qd=8", 32, 32 * 65536),
        ("write bs=65536 qd=8", 16, 16 * 65536),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("virtio-blk-bench {job} ")))
            .unwrap_or_else(|| panic!("no line for {job}: {out}"));
        assert!(
            line.contains(&format!(" ops={ops} bytes={bytes} ns=")),
            "{line}"
        );
        let ns: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ns="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(ns > 0, "{line}");
    }
    assert_holds_the_write_pattern(&img);
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}

/// How many of `pid`'s threads are I/O worker threads (`aio=threads`).
fn worker_threads(pid: u32) -> usize {
    thread_names(pid).iter().filter(|n| *n == "worker").count()
}

/// Runs the benchmark workload's sequential jobs (QD 8: the guest hands
/// the device 8 adjacent requests at once) on `drive_opts` and returns
/// query-blockstats' counters for the disk, with the worker threads
/// the process has just after (they end 10 s after their last job).
fn sequential_jobs_stats(drive_opts: &str, device_opts: &str) -> (serde_json::Value, usize) {
    let dir = TempDir::new("vblk-merge");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let drive = format!(
        "file={},if=none,id=d0,format=raw{drive_opts}",
        img.display()
    );
    let device = format!("virtio-blk-pci,drive=d0{device_opts}");
    let args = guest_args(
        "virtio-blk-bench,idle blk-bench=write:64k:8:16,read:64k:8:32",
        &serial,
        &["-drive", &drive, "-device", &device],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk-bench") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk-bench jobs=2"), "{out}");
    let workers = worker_threads(vmm.child.id());
    // Every write reached the file: the pattern over the whole disk.
    assert_holds_the_write_pattern(&img);
    let stats = c.ok("query-blockstats", json!({}));
    let disk = stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["device"] == "d0"))
        .unwrap_or_else(|| panic!("no d0 in {stats}"));
    (disk["stats"].clone(), workers)
}

/// Adjacent requests of one batch go to the host file as one transfer,
/// and query-blockstats counts them as QEMU does: every request an
/// operation, all but the first of a transfer merged. With `aio=threads`
/// (the default) worker threads do the transfers, as QEMU's thread pool.
#[test]
fn adjacent_requests_are_merged_and_counted_as_qemu_counts_them() {
    let (s, workers) = sequential_jobs_stats("", "");
    assert!(workers >= 1, "no worker threads with aio=threads");
    assert_eq!(s["wr_operations"], 16, "{s}");
    assert_eq!(s["wr_bytes"], 16 * 65536, "{s}");
    assert_eq!(s["rd_operations"], 32, "{s}");
    assert_eq!(s["rd_bytes"], 32 * 65536, "{s}");
    assert_eq!(s["wr_highest_offset"], 1 << 20, "{s}");
    // The first batch of 8 is one transfer at least.
    assert!(s["wr_merged"].as_i64().unwrap_or(0) >= 7, "{s}");
    assert!(s["rd_merged"].as_i64().unwrap_or(0) >= 7, "{s}");
}

#[test]
fn request_merging_off_sends_each_request_alone() {
    let (s, _) = sequential_jobs_stats(",aio=threads", ",request-merging=off");
    assert_eq!(s["wr_operations"], 16, "{s}");
    assert_eq!(s["rd_operations"], 32, "{s}");
    assert_eq!(s["wr_merged"], 0, "{s}");
    assert_eq!(s["rd_merged"], 0, "{s}");
}

/// With O_DIRECT (`cache.direct=on,aio=native`, the benchmark's
/// configuration) the same requests go straight from guest memory to the
/// file through io_uring, no worker thread involved; where the temporary directory's file system refuses O_DIRECT
/// (tmpfs before Linux 6.6) the test says so and checks nothing.
#[test]
fn requests_reach_an_o_direct_file_from_guest_memory() {
    let probe = TempDir::new("odirect-probe");
    let f = probe.path().join("p");
    std::fs::write(&f, [0u8; 4096]).expect("probe file");
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&f)
        .is_ok();
    if !direct {
        eprintln!("skipped: the temporary directory does not support O_DIRECT");
        return;
    }
    let (s, workers) = sequential_jobs_stats(",cache.direct=on,aio=native", "");
    assert_eq!(workers, 0, "aio=native used worker threads");
    assert_eq!(s["wr_operations"], 16, "{s}");
    assert_eq!(s["rd_operations"], 32, "{s}");
    assert!(s["rd_merged"].as_i64().unwrap_or(0) >= 7, "{s}");
    assert_eq!(s["failed_rd_operations"], 0, "{s}");
    assert_eq!(s["failed_wr_operations"], 0, "{s}");
}

/// `stop` waits for the requests in flight and starts no new one until
/// `cont`; a reset in the middle of I/O ends the device's I/O cleanly and
/// the rebooted guest drives the disk again.
#[test]
fn stop_cont_and_reset_in_the_middle_of_io_lose_nothing() {
    let dir = TempDir::new("vblk-stopcont");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let args = guest_args(
        "virtio-blk-bench,idle blk-bench=randwrite:4k:32:20000,randread:4k:32:20000,write:64k:8:16",
        &serial,
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("virtio-blk-bench clock=")
    });
    for _ in 0..5 {
        c.ok("stop", json!({}));
        let before = c.ok("query-blockstats", json!({}));
        std::thread::sleep(Duration::from_millis(50));
        let after = c.ok("query-blockstats", json!({}));
        // Nothing ran while the VM was stopped.
        assert_eq!(
            before[0]["stats"]["wr_operations"],
            after[0]["stats"]["wr_operations"]
        );
        assert_eq!(
            before[0]["stats"]["rd_operations"],
            after[0]["stats"]["rd_operations"]
        );
        c.ok("cont", json!({}));
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk-bench") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk-bench jobs=3"), "{out}");
    // Reboot; reset again once the guest's I/O runs: the third boot
    // runs to the end.
    let wait_count = |what: &str, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&serial).unwrap_or_default();
            if text.matches(what).count() >= n {
                return;
            }
            assert!(!text.contains("fail"), "{text}");
            assert!(std::time::Instant::now() < deadline, "timed out: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    c.ok("system_reset", json!({}));
    wait_count("virtio-blk-bench clock=", 2);
    c.ok("system_reset", json!({}));
    wait_count("ok virtio-blk-bench jobs=3", 2);
    assert_holds_the_write_pattern(&img);
    assert_eq!(c.ok("query-status", json!({}))["status"], "running");
}

/// MSI-X as the guest sees it: a completion while the vector is masked
/// sets its pending bit only; unmasking delivers the message to the local
/// APIC (the guest reads its IRR) and clears the bit.
#[test]
fn msix_masking_keeps_the_interrupt_pending_until_unmasked() {
    let out = guest_test_output("virtio-msix", ",disable-legacy=on");
    assert!(
        out.contains("virtio-msix masked: pending=true delivered=false"),
        "{out}"
    );
    assert!(out.contains("ok virtio-msix vector=0x41"), "{out}");
}

/// Bus mastering off: the device touches no guest memory (a request made
/// then waits), and DRIVER_OK goes from the status as QEMU takes it; the
/// request completes once the driver turns bus mastering on and sets
/// DRIVER_OK again.
#[test]
fn without_bus_mastering_the_device_leaves_guest_memory_alone() {
    let out = guest_test_output("virtio-busmaster", "");
    assert!(
        out.contains("virtio-busmaster bus-master off: completed=false"),
        "{out}"
    );
    // ACKNOWLEDGE, DRIVER and FEATURES_OK remain.
    assert!(
        out.contains("virtio-busmaster bus-master off: status=0xb"),
        "{out}"
    );
    assert!(out.contains("ok virtio-busmaster"), "{out}");
}

/// `cyls`, `heads` and `secs` given on the command line are what the
/// guest reads; out of QEMU's ranges they are refused with its text.
#[test]
fn a_given_geometry_reaches_the_guest_and_bad_ones_are_refused() {
    let out = guest_test_output("virtio-blk", ",cyls=100,heads=4,secs=8");
    assert!(out.contains("virtio-blk geometry=100/4/8"), "{out}");
    let dir = TempDir::new("vblk-chs");
    let img = make_image(dir.path(), 1 << 20);
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let (st, _, err) = vmm_tests::run_vmm(&[
        "-nodefaults",
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=d0,cyls=100,heads=0,secs=8",
    ]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("heads must be between 1 and 255"), "{err}");
}

/// The VIRTIO_PCI_CAP_PCI_CFG window (as QEMU offers it) reaches the
/// common configuration through configuration space, both ways.
#[test]
fn the_pci_cfg_capability_reads_and_writes_the_common_configuration() {
    let out = guest_test_output("virtio-pci-cfg", ",disable-legacy=on");
    assert!(
        out.contains("virtio-pci-cfg cap=0x94 status=0xf/0xf vector=0x0/0xffff"),
        "{out}"
    );
    assert!(out.contains("ok virtio-pci-cfg"), "{out}");
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim_end().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `iothread=`: the device's I/O loop runs on the iothread object's
/// thread (the one query-iothreads reports), not on one of its own; the
/// iothread cannot be deleted meanwhile; QEMU's texts for a path that
/// names no iothread.
#[test]
fn a_device_on_an_iothread_runs_its_io_there() {
    let dir = TempDir::new("vblk-iothread");
    let img = make_image(dir.path(), 1 << 20);
    let serial = dir.path().join("com1.log");
    let drive = format!("file={},if=none,id=d0,format=raw", img.display());
    let args = guest_args(
        "virtio-blk,idle",
        &serial,
        &[
            "-object",
            "iothread,id=io0",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0,iothread=io0,id=vb0",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let mut c = vmm.qmp();
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk"), "{out}");
    // The device's iothread link, through the proxy's alias.
    assert_eq!(
        c.qom_get("/machine/peripheral/vb0", "iothread"),
        json!("/objects/io0")
    );
    let qtree = c.ok(
        "human-monitor-command",
        json!({"command-line": "info qtree"}),
    );
    assert!(
        qtree
            .as_str()
            .is_some_and(|t| t.contains("iothread = \"/objects/io0\"")),
        "{qtree}"
    );
    let names = thread_names(vmm.child.id());
    assert!(names.iter().any(|n| n == "IO io0"), "{names:?}");
    assert!(!names.iter().any(|n| n == "virtio-blk-io"), "{names:?}");
    assert_eq!(
        c.err("object-del", json!({"id": "io0"})),
        (
            "GenericError".to_string(),
            "object 'io0' is in use, can not be deleted".to_string()
        )
    );
    c.ok("quit", json!({}));
    drop(vmm);

    let fails = |extra: &[&str], text: &str| {
        let mut all = vec!["-nodefaults", "-S", "-drive", &drive];
        all.extend_from_slice(extra);
        vmm_tests::start_fails(&all, text);
    };
    fails(
        &["-device", "virtio-blk-pci,drive=d0,iothread=nope"],
        "Device 'nope' not found",
    );
    fails(
        &[
            "-object",
            "memory-backend-ram,id=m0,size=1M",
            "-device",
            "virtio-blk-pci,drive=d0,iothread=m0",
        ],
        "Invalid parameter type for 'iothread', expected: iothread",
    );
}

/// Two devices on one iothread: both run their loops on its thread (the
/// guest drives the first; the iothread's own tests drive several).
#[test]
fn two_devices_share_an_iothread() {
    let dir = TempDir::new("vblk-iothread2");
    let img = make_image(dir.path(), 1 << 20);
    let other = dir.path().join("other.raw");
    std::fs::write(&other, vec![0u8; 1 << 20]).expect("second image");
    let serial = dir.path().join("com1.log");
    let d0 = format!("file={},if=none,id=d0,format=raw", img.display());
    let d1 = format!("file={},if=none,id=d1,format=raw", other.display());
    let args = guest_args(
        "virtio-blk,idle",
        &serial,
        &[
            "-object",
            "iothread,id=io0",
            "-drive",
            &d0,
            "-drive",
            &d1,
            "-device",
            "virtio-blk-pci,drive=d0,iothread=io0",
            "-device",
            "virtio-blk-pci,drive=d1,iothread=io0",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vmm = VmmProcess::start(&args);
    let out = wait_for_text(&serial, Duration::from_secs(60), |l| {
        l.contains("ok virtio-blk") || l.contains("fail")
    });
    assert!(out.contains("ok virtio-blk"), "{out}");
    let names = thread_names(vmm.child.id());
    assert!(!names.iter().any(|n| n == "virtio-blk-io"), "{names:?}");
}
