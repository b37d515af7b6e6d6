//! Migration settings through QMP and HMP: the status before any
//! migration, the capabilities and parameters with QEMU 2.11's defaults,
//! checks and texts, and the HMP commands that print and set them.

use serde_json::{json, Value};
use vmm_tests::{generic, Oracle, QmpClient, VmmProcess};

fn start() -> (VmmProcess, QmpClient) {
    VmmProcess::start_paused(&["-machine", "none"])
}

#[test]
fn before_any_migration_the_status_is_empty_and_capabilities_match_qemu() {
    let (_vmm, mut c) = start();
    assert_eq!(c.ok("query-migrate", json!({})), json!({}));
    // libvirt's probe of QEMU 2.11.0 got exactly this list.
    let oracle = Oracle::load();
    assert_eq!(
        c.ok("query-migrate-capabilities", json!({})),
        oracle.reply("query-migrate-capabilities")["return"]
    );
    assert_eq!(
        c.hmp("info migrate"),
        "globals: store-global-state=1, only_migratable=0, send-configuration=1, \
         send-section-footer=1\r\n"
    );
    // Nothing runs, so cancelling is a no-op and postcopy cannot start.
    c.ok("migrate_cancel", json!({}));
    assert_eq!(
        c.err("migrate-start-postcopy", json!({})),
        generic("Enable postcopy with migrate_set_capability before the start of migration")
    );
    assert_eq!(
        c.err("migrate-continue", json!({"state": "pre-switchover"})),
        generic("Migration not in expected state: none")
    );
    // The transfer itself has not landed and says so.
    let (_, desc) = c.err("migrate", json!({"uri": "exec:cat >/dev/null"}));
    assert!(desc.contains("not implemented"), "{desc}");
}

#[test]
fn capabilities_are_set_all_or_nothing_with_qemus_checks() {
    let (_vmm, mut c) = start();
    c.ok(
        "migrate-set-capabilities",
        json!({"capabilities": [
            {"capability": "xbzrle", "state": true},
            {"capability": "compress", "state": true},
        ]}),
    );
    assert_eq!(
        c.err(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "events", "state": true},
                {"capability": "postcopy-ram", "state": true},
            ]}),
        ),
        generic("Postcopy is not currently compatible with compression")
    );
    let caps = c.ok("query-migrate-capabilities", json!({}));
    let on: Vec<&str> = caps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == json!(true))
        .map(|c| c["capability"].as_str().unwrap())
        .collect();
    assert_eq!(on, ["xbzrle", "compress"]);

    // HMP sets one and lists them as QMP does.
    assert_eq!(c.hmp("migrate_set_capability compress off"), "");
    assert_eq!(c.hmp("migrate_set_capability postcopy-ram on"), "");
    let caps = c.ok("query-migrate-capabilities", json!({}));
    let text: String = caps
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}: {}\r\n",
                c["capability"].as_str().unwrap(),
                if c["state"] == json!(true) {
                    "on"
                } else {
                    "off"
                }
            )
        })
        .collect();
    assert_eq!(c.hmp("info migrate_capabilities"), text);
    assert!(text.contains("postcopy-ram: on\r\n"), "{text}");
    assert_eq!(
        c.hmp("migrate_set_capability compress on"),
        "Postcopy is not currently compatible with compression\r\n"
    );
    // With postcopy-ram on, starting it only waits for a migration.
    assert_eq!(
        c.err("migrate-start-postcopy", json!({})),
        generic("Postcopy must be started after migration has been started")
    );
}

#[test]
fn parameters_have_qemus_defaults_and_range_checks() {
    let (_vmm, mut c) = start();
    let defaults = json!({
        "compress-level": 1, "compress-threads": 8, "decompress-threads": 2,
        "cpu-throttle-initial": 20, "cpu-throttle-increment": 10,
        "tls-creds": "", "tls-hostname": "",
        "max-bandwidth": 33554432, "downtime-limit": 300,
        "x-checkpoint-delay": 200, "block-incremental": false,
        "x-multifd-channels": 2, "x-multifd-page-count": 16,
        "xbzrle-cache-size": 67108864,
    });
    assert_eq!(c.ok("query-migrate-parameters", json!({})), defaults);

    for (args, text) in [
        (
            json!({"compress-level": 10}),
            "Parameter 'compress_level' expects is invalid, it should be in the range of 0 to 9",
        ),
        (
            json!({"compress-threads": 0}),
            "Parameter 'compress_threads' expects is invalid, it should be in the range of 1 to 255",
        ),
        (
            json!({"cpu-throttle-increment": 100}),
            "Parameter 'cpu_throttle_increment' expects an integer in the range of 1 to 99",
        ),
        (
            json!({"max-bandwidth": -1}),
            "Parameter 'max_bandwidth' expects an integer in the range of 0 to \
             18446744073709551615 bytes/second",
        ),
        (
            json!({"downtime-limit": 2000001}),
            "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds",
        ),
        (
            json!({"x-multifd-page-count": 10001}),
            "Parameter 'multifd_page_count' expects is invalid, it should be in the range of 1 to 10000",
        ),
        (
            json!({"xbzrle-cache-size": 12288}),
            "Parameter 'xbzrle_cache_size' expects is invalid, it should be bigger than target \
             page size and a power of two",
        ),
        // One bad member refuses the whole request.
        (
            json!({"compress-level": 9, "decompress-threads": 256}),
            "Parameter 'decompress_threads' expects is invalid, it should be in the range of 1 to 255",
        ),
    ] {
        assert_eq!(
            c.err("migrate-set-parameters", args.clone()),
            generic(text),
            "{args}"
        );
    }
    assert_eq!(c.ok("query-migrate-parameters", json!({})), defaults);

    c.ok(
        "migrate-set-parameters",
        json!({"compress-level": 9, "tls-creds": "tls0", "tls-hostname": null,
               "block-incremental": true}),
    );
    // The older commands set the same parameters.
    c.ok("migrate_set_speed", json!({"value": 1048576}));
    c.ok("migrate_set_downtime", json!({"value": 0.25}));
    c.ok("migrate-set-cache-size", json!({"value": 1048576}));
    assert_eq!(
        c.err("migrate_set_downtime", json!({"value": 2001})),
        generic("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 seconds")
    );
    assert_eq!(c.ok("query-migrate-cache-size", json!({})), json!(1048576));
    let p = c.ok("query-migrate-parameters", json!({}));
    assert_eq!(p["compress-level"], json!(9));
    assert_eq!(p["tls-creds"], json!("tls0"));
    assert_eq!(p["tls-hostname"], json!(""));
    assert_eq!(p["block-incremental"], json!(true));
    assert_eq!(p["max-bandwidth"], json!(1048576));
    assert_eq!(p["downtime-limit"], json!(250));
    assert_eq!(p["xbzrle-cache-size"], json!(1048576));
}

/// What QEMU's `info migrate_parameters` prints for a
/// query-migrate-parameters answer.
fn parameters_text(p: &Value) -> String {
    let mut out = String::new();
    for (name, unit) in [
        ("compress-level", ""),
        ("compress-threads", ""),
        ("decompress-threads", ""),
        ("cpu-throttle-initial", ""),
        ("cpu-throttle-increment", ""),
        ("tls-creds", "'"),
        ("tls-hostname", "'"),
        ("max-bandwidth", " bytes/second"),
        ("downtime-limit", " milliseconds"),
        ("x-checkpoint-delay", ""),
        ("block-incremental", ""),
        ("x-multifd-channels", ""),
        ("x-multifd-page-count", ""),
        ("xbzrle-cache-size", ""),
    ] {
        let v = &p[name];
        let text = match v {
            Value::String(s) => format!("'{s}'"),
            Value::Bool(b) => (if *b { "on" } else { "off" }).to_string(),
            _ => format!("{v}{unit}"),
        };
        out.push_str(&format!("{name}: {text}\r\n"));
    }
    out
}

#[test]
fn hmp_prints_and_sets_the_parameters() {
    let (_vmm, mut c) = start();
    let p = c.ok("query-migrate-parameters", json!({}));
    assert_eq!(c.hmp("info migrate_parameters"), parameters_text(&p));
    assert_eq!(
        c.hmp("info migrate_cache_size"),
        "xbzrel cache size: 65536 kbytes\r\n"
    );

    for line in [
        "migrate_set_parameter compress-threads 4",
        "migrate_set_parameter tls-creds tls0",
        "migrate_set_parameter max-bandwidth 100",
        "migrate_set_parameter xbzrle-cache-size 2M",
        "migrate_set_parameter block-incremental on",
        "migrate_set_cache_size 4M",
        "migrate_set_speed 2M",
        "migrate_set_downtime 1.5",
    ] {
        assert_eq!(c.hmp(line), "", "{line}");
    }
    let p = c.ok("query-migrate-parameters", json!({}));
    assert_eq!(p["compress-threads"], json!(4));
    assert_eq!(p["tls-creds"], json!("tls0"));
    assert_eq!(p["block-incremental"], json!(true));
    // max-bandwidth counts in MiB without a suffix; migrate_set_speed
    // set it afterwards in bytes.
    assert_eq!(p["max-bandwidth"], json!(2 << 20));
    assert_eq!(p["xbzrle-cache-size"], json!(4 << 20));
    assert_eq!(p["downtime-limit"], json!(1500));
    assert_eq!(c.hmp("info migrate_parameters"), parameters_text(&p));
    assert_eq!(
        c.hmp("info migrate_cache_size"),
        "xbzrel cache size: 4096 kbytes\r\n"
    );

    for (line, text) in [
        (
            "migrate_set_parameter compress-level x",
            "Parameter 'compress-level' expects an int64 value or range",
        ),
        (
            "migrate_set_parameter compress-level 10",
            "Parameter 'compress_level' expects is invalid, it should be in the range of 0 to 9",
        ),
        ("migrate_set_parameter max-bandwidth 1Q", "Invalid size 1Q"),
        (
            "migrate_set_parameter block-incremental maybe",
            "Invalid parameter type for 'block-incremental', expected: boolean",
        ),
        ("migrate_set_parameter speed 1", "Invalid parameter 'speed'"),
        (
            "migrate_set_cache_size 3k",
            "Parameter 'xbzrle_cache_size' expects is invalid, it should be bigger than target \
             page size and a power of two",
        ),
        // As in QEMU, these two drop a refused value silently.
        ("migrate_set_downtime 5000", ""),
    ] {
        let expected = if text.is_empty() {
            String::new()
        } else {
            format!("{text}\r\n")
        };
        assert_eq!(c.hmp(line), expected, "{line}");
    }
    assert_eq!(
        c.ok("query-migrate-parameters", json!({}))["downtime-limit"],
        json!(1500)
    );
}
