//! The human monitor (HMP): QEMU 2.11's monitor commands, read with its
//! argument syntax, run through the same `QmpCommands` methods QMP uses,
//! and printed in the text QEMU prints, so that scripts written for QEMU's
//! monitor keep working.
//!
//! [`run_line`] runs one command line and returns its text with `\n` line
//! ends; the readline session ([`Session`], `readline.rs`) and QMP's
//! `human-monitor-command` are its two callers. A command whose QMP
//! counterpart is not implemented prints that command's error.

mod info;
mod mtree;
mod parse;
mod platform;
mod qemu_io;
mod qtree;
mod readline;
mod registers;

use crate::commands::Vmm;
use parse::{Arg, Args, Cursor, DefaultFormat};
use qmp::qapi::*;
use qmp::Error;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

pub use readline::Session;

/// What one monitor keeps between commands.
#[derive(Default)]
pub struct HmpState {
    /// The monitor's current CPU (`cpu N`), for `info cpus`, `x`,
    /// `memsave` and `info registers`.
    pub cpu: usize,
    /// Command lines typed at this monitor, oldest first (readline
    /// monitors only).
    pub history: Option<Vec<String>>,
}

/// The last `/fmt` of `x`, `xp` and `print`; as in QEMU, one for every
/// monitor.
static DEFAULT_FORMAT: std::sync::Mutex<DefaultFormat> = std::sync::Mutex::new(DefaultFormat {
    format: b'x',
    size: 4,
});

/// What a command prints to, and everything it may use.
struct Ctx<'a> {
    vmm: &'a mut Vmm,
    state: &'a mut HmpState,
    out: String,
}

type Handler = fn(&mut Ctx<'_>, &Args) -> Result<(), Error>;

/// How a command runs.
enum Run {
    /// Formatting code of its own.
    Fn(Handler),
    /// The QMP command of that name with the arguments of the same names
    /// (HMP name, QMP name); it prints nothing on success.
    Qmp(&'static str, &'static [(&'static str, &'static str)]),
    /// A query whose QMP command has not landed, so it has no HMP
    /// formatter yet: its error, or (once the command works) nothing for
    /// an empty list and the QMP answer as JSON otherwise. Each gets
    /// QEMU's format when its subsystem lands.
    Query(&'static str),
    /// `info`: runs a subcommand.
    Info,
}

struct Cmd {
    /// Names, `|`-separated (`c|cont`).
    name: &'static str,
    /// QEMU's `args_type` notation (see parse.rs).
    args: &'static str,
    params: &'static str,
    help: &'static str,
    run: Run,
}

const fn cmd(
    name: &'static str,
    args: &'static str,
    params: &'static str,
    help: &'static str,
    run: Run,
) -> Cmd {
    Cmd {
        name,
        args,
        params,
        help,
        run,
    }
}

const COMMANDS: &[Cmd] = &[
    cmd(
        "help|?",
        "name:S?",
        "[cmd]",
        "list the commands, or describe one",
        Run::Fn(help),
    ),
    cmd("q|quit", "", "", "end the emulator", Run::Fn(quit)),
    cmd(
        "block_resize",
        "device:B,size:o",
        "device size",
        "change the size of a block image",
        Run::Qmp("block_resize", &[("device", "device"), ("size", "size")]),
    ),
    cmd(
        "block_job_set_speed",
        "device:B,speed:o",
        "device speed",
        "limit the speed of a block job",
        Run::Qmp(
            "block-job-set-speed",
            &[("device", "device"), ("speed", "speed")],
        ),
    ),
    cmd(
        "block_job_cancel",
        "force:-f,device:B",
        "[-f] device",
        "stop a block job (-f: even a paused one)",
        Run::Qmp(
            "block-job-cancel",
            &[("force", "force"), ("device", "device")],
        ),
    ),
    cmd(
        "block_job_complete",
        "device:B",
        "device",
        "finish a block job that is ready",
        Run::Qmp("block-job-complete", &[("device", "device")]),
    ),
    cmd(
        "block_job_pause",
        "device:B",
        "device",
        "pause a block job",
        Run::Qmp("block-job-pause", &[("device", "device")]),
    ),
    cmd(
        "block_job_resume",
        "device:B",
        "device",
        "resume a paused block job",
        Run::Qmp("block-job-resume", &[("device", "device")]),
    ),
    cmd(
        "eject",
        "force:-f,device:B",
        "[-f] device",
        "remove the medium of a removable drive (-f: even if locked)",
        Run::Qmp("eject", &[("force", "force"), ("device", "device")]),
    ),
    cmd(
        "change",
        "device:B,target:F,arg:s?",
        "device filename [format]",
        "insert another medium, or reconfigure vnc",
        Run::Qmp(
            "change",
            &[("device", "device"), ("target", "target"), ("arg", "arg")],
        ),
    ),
    cmd(
        "block_passwd",
        "device:B,password:s",
        "block_passwd device password",
        "give the key of an encrypted image",
        Run::Qmp(
            "block_passwd",
            &[("device", "device"), ("password", "password")],
        ),
    ),
    cmd(
        "qemu-io",
        "device:B,command:s",
        "[-d] [device] \"[command]\"",
        "run a qemu-io command on a drive or block node",
        Run::Fn(qemu_io_command),
    ),
    cmd(
        "screendump",
        "filename:F",
        "filename",
        "write the screen to a PPM file",
        Run::Qmp("screendump", &[("filename", "filename")]),
    ),
    cmd(
        "trace-event",
        "name:s,option:b",
        "name on|off",
        "turn a trace event on or off",
        Run::Fn(trace_event),
    ),
    cmd("stop", "", "", "pause the guest", Run::Fn(stop)),
    cmd("c|cont", "", "", "let the guest run again", Run::Fn(cont)),
    cmd(
        "system_wakeup",
        "",
        "",
        "wake a suspended guest",
        Run::Fn(system_wakeup),
    ),
    cmd(
        "x",
        "fmt:/,addr:l",
        "/fmt addr",
        "show guest memory at a virtual address",
        Run::Fn(memory_dump_virtual),
    ),
    cmd(
        "xp",
        "fmt:/,addr:l",
        "/fmt addr",
        "show guest memory at a physical address",
        Run::Fn(memory_dump_physical),
    ),
    cmd(
        "p|print",
        "fmt:/,val:l",
        "/fmt expr",
        "print the value of an expression ($reg reads a register)",
        Run::Fn(print),
    ),
    cmd(
        "sendkey",
        "keys:s,hold-time:i?",
        "keys [hold_ms]",
        "press keys in the guest (e.g. ctrl-alt-f1)",
        Run::Fn(sendkey),
    ),
    cmd(
        "mouse_move",
        "dx_str:s,dy_str:s,dz_str:s?",
        "dx dy [dz]",
        "move the mouse by dx, dy (and turn its wheel by dz)",
        Run::Fn(mouse_move),
    ),
    cmd(
        "mouse_button",
        "button_state:i",
        "state",
        "set the mouse buttons held (1=left, 2=right, 4=middle)",
        Run::Fn(mouse_button),
    ),
    cmd(
        "mouse_set",
        "index:i",
        "index",
        "pick the mouse that moves (the index info mice shows)",
        Run::Fn(mouse_set),
    ),
    cmd(
        "system_reset",
        "",
        "",
        "reset the machine",
        Run::Fn(system_reset),
    ),
    cmd(
        "system_powerdown",
        "",
        "",
        "press the power button",
        Run::Fn(system_powerdown),
    ),
    cmd(
        "device_add",
        "device:O",
        "driver[,prop=value][,...]",
        "plug a device in, as -device does",
        Run::Fn(device_add),
    ),
    cmd(
        "device_del",
        "id:s",
        "device",
        "unplug a device",
        Run::Qmp("device_del", &[("id", "id")]),
    ),
    cmd(
        "cpu",
        "index:i",
        "index",
        "choose the monitor's current CPU",
        Run::Fn(set_cpu),
    ),
    cmd(
        "memsave",
        "val:l,size:i,filename:s",
        "addr size file",
        "write virtual memory of the current CPU to a file",
        Run::Fn(memsave),
    ),
    cmd(
        "pmemsave",
        "val:l,size:i,filename:s",
        "addr size file",
        "write physical memory to a file",
        Run::Qmp(
            "pmemsave",
            &[("val", "val"), ("size", "size"), ("filename", "filename")],
        ),
    ),
    cmd(
        "migrate",
        "detach:-d,blk:-b,inc:-i,uri:s",
        "[-d] [-b] [-i] uri",
        "migrate to uri (-b: with disks, -i: incrementally)",
        Run::Qmp(
            "migrate",
            &[
                ("detach", "detach"),
                ("blk", "blk"),
                ("inc", "inc"),
                ("uri", "uri"),
            ],
        ),
    ),
    cmd(
        "migrate_cancel",
        "",
        "",
        "stop the current migration",
        Run::Qmp("migrate_cancel", &[]),
    ),
    cmd(
        "migrate_continue",
        "state:s",
        "state",
        "go on with a migration paused in state",
        Run::Qmp("migrate-continue", &[("state", "state")]),
    ),
    cmd(
        "migrate_incoming",
        "uri:s",
        "uri",
        "receive an incoming migration on uri",
        Run::Qmp("migrate-incoming", &[("uri", "uri")]),
    ),
    cmd(
        "migrate_set_cache_size",
        "value:o",
        "value",
        "set the XBZRLE cache size",
        Run::Qmp("migrate-set-cache-size", &[("value", "value")]),
    ),
    cmd(
        "migrate_set_speed",
        "value:o",
        "value",
        "limit the migration bandwidth (bytes per second)",
        Run::Fn(migrate_set_speed),
    ),
    cmd(
        "migrate_set_downtime",
        "value:T",
        "value",
        "set the longest tolerated downtime (seconds)",
        Run::Fn(migrate_set_downtime),
    ),
    cmd(
        "migrate_set_capability",
        "capability:s,state:b",
        "capability state",
        "turn a migration capability on or off",
        Run::Fn(migrate_set_capability),
    ),
    cmd(
        "migrate_set_parameter",
        "parameter:s,value:s",
        "parameter value",
        "set a migration parameter",
        Run::Fn(migrate_set_parameter),
    ),
    cmd(
        "migrate_start_postcopy",
        "",
        "",
        "switch the running migration to postcopy",
        Run::Qmp("migrate-start-postcopy", &[]),
    ),
    cmd(
        "x_colo_lost_heartbeat",
        "",
        "",
        "tell COLO its peer is gone",
        Run::Qmp("x-colo-lost-heartbeat", &[]),
    ),
    cmd(
        "set_password",
        "protocol:s,password:s,connected:s?",
        "protocol password action-if-connected",
        "set a display password",
        Run::Qmp(
            "set_password",
            &[
                ("protocol", "protocol"),
                ("password", "password"),
                ("connected", "connected"),
            ],
        ),
    ),
    cmd(
        "expire_password",
        "protocol:s,time:s",
        "protocol time",
        "make a display password expire",
        Run::Qmp(
            "expire_password",
            &[("protocol", "protocol"), ("time", "time")],
        ),
    ),
    cmd(
        "balloon",
        "value:M",
        "target",
        "ask the guest to use target MiB of memory",
        Run::Qmp("balloon", &[("value", "value")]),
    ),
    cmd(
        "set_link",
        "name:s,up:b",
        "name on|off",
        "bring a network link up or down",
        Run::Qmp("set_link", &[("name", "name"), ("up", "up")]),
    ),
    cmd(
        "watchdog_action",
        "action:s",
        "[reset|shutdown|poweroff|pause|debug|none]",
        "choose what an expired watchdog does",
        Run::Qmp("watchdog-set-action", &[("action", "action")]),
    ),
    cmd(
        "getfd",
        "fdname:s",
        "getfd name",
        "take a file descriptor passed with SCM_RIGHTS",
        Run::Qmp("getfd", &[("fdname", "fdname")]),
    ),
    cmd(
        "closefd",
        "fdname:s",
        "closefd name",
        "close a file descriptor taken with getfd",
        Run::Qmp("closefd", &[("fdname", "fdname")]),
    ),
    cmd(
        "netdev_del",
        "id:s",
        "id",
        "remove a network backend",
        Run::Qmp("netdev_del", &[("id", "id")]),
    ),
    cmd(
        "object_add",
        "object:O",
        "[qom-type=]type,id=str[,prop=value][,...]",
        "create an object, as -object does",
        Run::Fn(object_add),
    ),
    cmd(
        "object_del",
        "id:s",
        "id",
        "destroy an object",
        Run::Qmp("object-del", &[("id", "id")]),
    ),
    cmd(
        "nmi",
        "",
        "",
        "send a non-maskable interrupt",
        Run::Qmp("inject-nmi", &[]),
    ),
    cmd(
        "ringbuf_write",
        "device:s,data:s",
        "device data",
        "put text into a ring buffer chardev",
        Run::Qmp("ringbuf-write", &[("device", "device"), ("data", "data")]),
    ),
    cmd(
        "ringbuf_read",
        "device:s,size:i",
        "device size",
        "take text out of a ring buffer chardev",
        Run::Fn(ringbuf_read),
    ),
    cmd(
        "nbd_server_stop",
        "",
        "nbd_server_stop",
        "stop the NBD server",
        Run::Qmp("nbd-server-stop", &[]),
    ),
    cmd(
        "chardev-remove",
        "id:s",
        "id",
        "remove a chardev",
        Run::Qmp("chardev-remove", &[("id", "id")]),
    ),
    cmd(
        "commit",
        "device:B",
        "device|all",
        "commit a drive's changes into its backing file (with -snapshot: into the image)",
        Run::Fn(commit),
    ),
    cmd(
        "drive_add",
        "node:-n,pci_addr:s,opts:s",
        "[-n] [[<domain>:]<bus>:]<slot> [file=file][,if=type][,bus=n]...",
        "add a drive (if=none: for a device to use)",
        Run::Fn(drive_add),
    ),
    cmd(
        "drive_del",
        "id:B",
        "device",
        "remove a drive's medium and name, or a node",
        Run::Fn(drive_del),
    ),
    cmd(
        "chardev-add",
        "args:s",
        "args",
        "add a chardev (the options of -chardev)",
        Run::Fn(chardev_add),
    ),
    cmd(
        "chardev-change",
        "id:s,args:s",
        "id args",
        "change a chardev's backend (the options of -chardev, no id)",
        Run::Fn(chardev_change),
    ),
    cmd(
        "chardev-send-break",
        "id:s",
        "id",
        "send a break on a chardev",
        Run::Qmp("chardev-send-break", &[("id", "id")]),
    ),
    cmd(
        "snapshot_blkdev_internal",
        "device:B,name:s",
        "device name",
        "take an internal snapshot of a device",
        Run::Qmp(
            "blockdev-snapshot-internal-sync",
            &[("device", "device"), ("name", "name")],
        ),
    ),
    cmd(
        "snapshot_delete_blkdev_internal",
        "device:B,name:s,id:s?",
        "device name [id]",
        "delete an internal snapshot of a device",
        Run::Qmp(
            "blockdev-snapshot-delete-internal-sync",
            &[("device", "device"), ("name", "name"), ("id", "id")],
        ),
    ),
    cmd(
        "sum",
        "start:i,size:i",
        "addr size",
        "the checksum of a memory region",
        Run::Fn(memory_sum),
    ),
    cmd(
        "gpa2hva",
        "addr:l",
        "addr",
        "the host virtual address of a guest physical address",
        Run::Fn(gpa2hva),
    ),
    cmd(
        "gpa2hpa",
        "addr:l",
        "addr",
        "the host physical address of a guest physical address",
        Run::Fn(gpa2hpa),
    ),
    cmd(
        "i",
        "fmt:/,addr:i,index:i.",
        "/fmt addr",
        "I/O port read",
        Run::Fn(ioport_read),
    ),
    cmd(
        "o",
        "fmt:/,addr:i,val:i",
        "/fmt addr value",
        "I/O port write",
        Run::Fn(ioport_write),
    ),
    cmd(
        "cpu-add",
        "id:i",
        "id",
        "hot-plug a CPU",
        Run::Qmp("cpu-add", &[("id", "id")]),
    ),
    cmd(
        "qom-list",
        "path:s?",
        "path",
        "list the properties of an object",
        Run::Fn(qom_list),
    ),
    cmd(
        "qom-set",
        "path:s,property:s,value:s",
        "path property value",
        "set an object's property",
        Run::Fn(qom_set),
    ),
    cmd(
        "info",
        "item:s?",
        "[subcommand]",
        "show the state of the machine",
        Run::Info,
    ),
];

const INFO_COMMANDS: &[Cmd] = &[
    cmd("version", "", "", "the version", Run::Fn(info_version)),
    cmd(
        "network",
        "",
        "",
        "the network state",
        Run::Fn(info_network),
    ),
    cmd(
        "chardev",
        "",
        "",
        "the character devices",
        Run::Fn(info_chardev),
    ),
    cmd(
        "block",
        "nodes:-n,verbose:-v,device:B?",
        "[-n] [-v] [device]",
        "the block devices (-n: every node, -v: with their images)",
        Run::Fn(info::info_block),
    ),
    cmd(
        "blockstats",
        "",
        "",
        "block device statistics",
        Run::Fn(info::info_blockstats),
    ),
    cmd(
        "block-jobs",
        "",
        "",
        "the running block jobs",
        Run::Fn(info_block_jobs),
    ),
    cmd(
        "registers",
        "",
        "",
        "the registers of the current CPU",
        Run::Fn(info_registers),
    ),
    cmd("cpus", "", "", "every CPU", Run::Fn(info_cpus)),
    cmd(
        "history",
        "",
        "",
        "the command line history",
        Run::Fn(info_history),
    ),
    cmd(
        "irq",
        "",
        "",
        "interrupt counts of the interrupt controllers that keep them",
        Run::Fn(platform::info_irq),
    ),
    cmd(
        "pic",
        "",
        "",
        "the state of the interrupt controllers",
        Run::Fn(platform::info_pic),
    ),
    cmd("pci", "", "", "the PCI devices", Run::Fn(info::info_pci)),
    cmd("kvm", "", "", "KVM support", Run::Fn(info_kvm)),
    cmd(
        "numa",
        "",
        "",
        "the NUMA nodes",
        Run::Fn(platform::info_numa),
    ),
    cmd(
        "usernet",
        "",
        "",
        "the user-mode network stacks",
        Run::Fn(platform::info_usernet),
    ),
    cmd("name", "", "", "the guest's name", Run::Fn(info_name)),
    cmd("status", "", "", "the run state", Run::Fn(info_status)),
    cmd("mice", "", "", "the mice", Run::Fn(info_mice)),
    cmd("vnc", "", "", "the VNC server", Run::Fn(info_vnc)),
    cmd("uuid", "", "", "the guest's UUID", Run::Fn(info_uuid)),
    cmd(
        "migrate",
        "",
        "",
        "the migration state",
        Run::Fn(info::info_migrate),
    ),
    cmd(
        "migrate_capabilities",
        "",
        "",
        "the migration capabilities",
        Run::Fn(info::info_migrate_capabilities),
    ),
    cmd(
        "migrate_parameters",
        "",
        "",
        "the migration parameters",
        Run::Fn(info::info_migrate_parameters),
    ),
    cmd(
        "migrate_cache_size",
        "",
        "",
        "the XBZRLE cache size",
        Run::Fn(info::info_migrate_cache_size),
    ),
    cmd("balloon", "", "", "the balloon", Run::Fn(info_balloon)),
    cmd("tpm", "", "", "the TPM", Run::Fn(info_tpm)),
    cmd(
        "memdev",
        "",
        "",
        "the memory backends",
        Run::Fn(info::info_memdev),
    ),
    cmd(
        "memory-devices",
        "",
        "",
        "the memory devices",
        Run::Fn(info_memory_devices),
    ),
    cmd(
        "iothreads",
        "",
        "",
        "the I/O threads",
        Run::Fn(info_iothreads),
    ),
    cmd(
        "snapshots",
        "",
        "",
        "the internal snapshots of the disks",
        Run::Fn(info::info_snapshots),
    ),
    cmd(
        "qom-tree",
        "path:s?",
        "[path]",
        "the QOM composition tree (under path)",
        Run::Fn(info::info_qom_tree),
    ),
    cmd(
        "mtree",
        "flatview:-f,dispatch_tree:-d",
        "[-f][-d]",
        "the memory regions of every address space (-f: as flat views; -d: with -f, the dispatch tree, which vmm does not have)",
        Run::Fn(mtree::info_mtree),
    ),
    cmd(
        "qtree",
        "",
        "",
        "the buses and devices of the machine",
        Run::Fn(qtree::info_qtree),
    ),
    cmd(
        "roms",
        "",
        "",
        "the ROM images loaded into the guest",
        Run::Fn(platform::info_roms),
    ),
    cmd(
        "dump",
        "",
        "",
        "the progress of dump-guest-memory",
        Run::Query("query-dump"),
    ),
];

fn matches(names: &str, name: &str) -> bool {
    names.split('|').any(|n| n == name)
}

/// Runs one HMP command line; returns what it prints (`\n` line ends).
pub fn run_line(vmm: &mut Vmm, state: &mut HmpState, line: &str) -> String {
    let mut ctx = Ctx {
        vmm,
        state,
        out: String::new(),
    };
    run_in(&mut ctx, COMMANDS, line, 0);
    ctx.out
}

/// Runs `line` from byte `from` against `table`.
fn run_in(ctx: &mut Ctx<'_>, table: &'static [Cmd], line: &str, from: usize) {
    let mut c = Cursor::new(line);
    c.pos = from;
    c.skip_space();
    if c.at_end() {
        return;
    }
    let name = c.command_name();
    let name_end = c.pos;
    let Some(command) = table.iter().find(|cmd| matches(cmd.name, name)) else {
        let _ = writeln!(ctx.out, "unknown command: '{}'", c.text(0, c.pos));
        return;
    };
    if let Run::Info = command.run {
        c.skip_space();
        if c.at_end() {
            dump_help(&mut ctx.out, INFO_COMMANDS, "info ");
        } else {
            run_in(ctx, INFO_COMMANDS, line, c.pos);
        }
        return;
    }
    let mut fmt = *DEFAULT_FORMAT.lock().unwrap_or_else(|e| e.into_inner());
    let parsed = {
        let mut regs = registers::Regs {
            vmm: &mut *ctx.vmm,
            cpu: ctx.state.cpu,
        };
        parse::arguments(name, command.args, &mut c, &mut regs, &mut fmt)
    };
    *DEFAULT_FORMAT.lock().unwrap_or_else(|e| e.into_inner()) = fmt;
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(ctx.out, "{e}");
            let typed = c.text(0, name_end).trim();
            let _ = writeln!(ctx.out, "Try \"help {typed}\" for more information");
            return;
        }
    };
    let result = match &command.run {
        Run::Fn(f) => f(ctx, &args),
        Run::Qmp(qmp_name, map) => qmp_call(ctx, qmp_name, &qmp_args(&args, map)).map(drop),
        Run::Query(qmp_name) => qmp_call(ctx, qmp_name, &Map::new()).map(|v| {
            // An empty list prints nothing, as in QEMU; anything else
            // shows the answer as JSON until it has a formatter of its own.
            if v.as_array().is_some_and(Vec::is_empty) {
                return;
            }
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            let _ = writeln!(ctx.out, "{text}");
        }),
        Run::Info => Ok(()),
    };
    if let Err(e) = result {
        let _ = writeln!(ctx.out, "{}", e.desc);
    }
}

fn qmp_args(args: &Args, map: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    for (hmp, qmp) in map {
        let Some(a) = args.get(*hmp) else { continue };
        let v = match a {
            Arg::Str(s) => json!(s),
            Arg::Int(i) => json!(i),
            Arg::Float(f) => json!(f),
            Arg::Bool(b) => json!(b),
            Arg::Opts(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
            Arg::Fmt { .. } => continue,
        };
        m.insert(qmp.to_string(), v);
    }
    m
}

fn qmp_call(ctx: &mut Ctx<'_>, name: &str, args: &Map<String, Value>) -> Result<Value, Error> {
    qmp::qapi::dispatch(&mut *ctx.vmm, name, args).unwrap_or_else(|| {
        Err(Error::command_not_found(format!(
            "The command {name} has not been found"
        )))
    })
}

/// The commands of `table` in QEMU's order: its monitor sorts its
/// command tables by name (strcmp) at start-up.
fn dump_help(out: &mut String, table: &[Cmd], prefix: &str) {
    let mut sorted: Vec<&Cmd> = table.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    for c in sorted {
        let _ = writeln!(out, "{prefix}{} {} -- {}", c.name, c.params, c.help);
    }
}

fn str_arg<'a>(args: &'a Args, key: &str) -> Option<&'a str> {
    match args.get(key) {
        Some(Arg::Str(s)) => Some(s),
        _ => None,
    }
}

fn int_arg(args: &Args, key: &str) -> Option<i64> {
    match args.get(key) {
        Some(Arg::Int(i)) => Some(*i),
        _ => None,
    }
}

fn help(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let Some(name) = str_arg(args, "name") else {
        dump_help(&mut ctx.out, COMMANDS, "");
        return Ok(());
    };
    let mut words = name.split_whitespace();
    let first = words.next().unwrap_or("");
    let Some(c) = COMMANDS.iter().find(|c| matches(c.name, first)) else {
        let _ = writeln!(ctx.out, "unknown command: '{first}'");
        return Ok(());
    };
    if let Run::Info = c.run {
        match words.next() {
            None => dump_help(&mut ctx.out, INFO_COMMANDS, "info "),
            Some(sub) => match INFO_COMMANDS.iter().find(|c| matches(c.name, sub)) {
                Some(i) => dump_help(&mut ctx.out, std::slice::from_ref(i), "info "),
                None => {
                    let _ = writeln!(ctx.out, "unknown command: 'info {sub}'");
                }
            },
        }
    } else {
        dump_help(&mut ctx.out, std::slice::from_ref(c), "");
    }
    Ok(())
}

fn quit(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.quit()
}

fn stop(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.stop()
}

fn cont(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.cont()
}

fn system_wakeup(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.system_wakeup()
}

fn system_reset(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.system_reset()
}

fn system_powerdown(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.system_powerdown()
}

fn trace_event(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let mut m = Map::new();
    m.insert("name".into(), json!(str_arg(args, "name").unwrap_or("")));
    m.insert(
        "enable".into(),
        json!(args.get("option") == Some(&Arg::Bool(true))),
    );
    qmp_call(ctx, "trace-event-set-state", &m).map(drop)
}

fn migrate_set_capability(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let cap = json!({
        "capability": str_arg(args, "capability").unwrap_or(""),
        "state": args.get("state") == Some(&Arg::Bool(true)),
    });
    let mut m = Map::new();
    m.insert("capabilities".into(), json!([cap]));
    qmp_call(ctx, "migrate-set-capabilities", &m).map(drop)
}

/// `migrate_set_speed`: as in QEMU, kept for old scripts, a refused
/// value is dropped without a word.
fn migrate_set_speed(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let _ = ctx
        .vmm
        .migration
        .set_speed(int_arg(args, "value").unwrap_or(0));
    Ok(())
}

/// `migrate_set_downtime`: seconds; a refused value is dropped without a
/// word, as in QEMU.
fn migrate_set_downtime(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    if let Some(Arg::Float(v)) = args.get("value") {
        let _ = ctx.vmm.migration.set_downtime(*v);
    }
    Ok(())
}

/// `migrate_set_parameter NAME VALUE`: VALUE read as QEMU's string
/// visitor reads the parameter's type; `max-bandwidth` defaults to MiB.
fn migrate_set_parameter(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let name = str_arg(args, "parameter").unwrap_or("");
    let value = str_arg(args, "value").unwrap_or("");
    let Some(param) = MigrationParameter::from_name(name) else {
        return Err(Error::generic(format!("Invalid parameter '{name}'")));
    };
    let int = || {
        value.parse::<i64>().map(Value::from).map_err(|_| {
            Error::generic(format!(
                "Parameter '{name}' expects an int64 value or range"
            ))
        })
    };
    let size = |default_shift| {
        parse::whole_size(value, default_shift)
            .filter(|v| i64::try_from(*v).is_ok())
            .map(Value::from)
            .ok_or_else(|| Error::generic(format!("Invalid size {value}")))
    };
    let v = match param {
        MigrationParameter::TlsCreds | MigrationParameter::TlsHostname => json!(value),
        MigrationParameter::MaxBandwidth => size(20)?,
        MigrationParameter::XbzrleCacheSize => size(0)?,
        MigrationParameter::BlockIncremental => match value {
            "on" | "yes" | "true" => json!(true),
            "off" | "no" | "false" => json!(false),
            _ => {
                return Err(Error::generic(format!(
                    "Invalid parameter type for '{name}', expected: boolean"
                )))
            }
        },
        _ => int()?,
    };
    let mut m = Map::new();
    m.insert(name.to_string(), v);
    qmp_call(ctx, "migrate-set-parameters", &m).map(drop)
}

fn device_add(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let Some(Arg::Opts(opts)) = args.get("device") else {
        return Ok(());
    };
    // As QEMU's monitor: `help` for the driver lists the device types,
    // a `help` option the driver's properties.
    let driver = opts.iter().rev().find(|(k, _)| k == "driver");
    if let Some((_, driver)) = driver {
        if crate::cmdline::is_help_option(driver) {
            ctx.out.push_str(&crate::qdev::device_list());
            return Ok(());
        }
        if opts.iter().any(|(k, _)| crate::cmdline::is_help_option(k)) {
            ctx.out.push_str(&crate::qdev::device_help(driver)?);
            return Ok(());
        }
    }
    let m = opts.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    qmp_call(ctx, "device_add", &m).map(drop)
}

fn object_add(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let Some(Arg::Opts(opts)) = args.get("object") else {
        return Ok(());
    };
    let find = |k: &str| {
        opts.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let qom_type =
        find("qom-type").ok_or_else(|| Error::generic("Parameter 'qom-type' is missing"))?;
    let id = find("id").ok_or_else(|| Error::generic("Parameter 'id' is missing"))?;
    let props: Vec<(String, String)> = opts
        .iter()
        .filter(|(k, _)| k != "qom-type" && k != "id")
        .cloned()
        .collect();
    // As QEMU's monitor: the properties are option strings, converted
    // by type as -object converts them.
    ctx.vmm
        .qom
        .object_add_cmdline(&qom_type, &id, &props, &ctx.vmm.chardevs)
}

fn qom_list(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let Some(path) = str_arg(args, "path") else {
        ctx.out.push_str("/\n");
        return Ok(());
    };
    let list = ctx.vmm.qom_list(QomListArgs {
        path: path.to_string(),
    })?;
    for p in list {
        let _ = writeln!(ctx.out, "{} ({})", p.name, p.r#type);
    }
    Ok(())
}

fn qom_set(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let path = str_arg(args, "path").unwrap_or("").to_string();
    let property = str_arg(args, "property").unwrap_or("").to_string();
    let text = str_arg(args, "value").unwrap_or("");
    let set = |vmm: &mut Vmm, value: Value| {
        vmm.qom_set(QomSetArgs {
            path: path.clone(),
            property: property.clone(),
            value,
        })
    };
    // QEMU parses the text by the property's type; try it as a string,
    // then as the number or boolean it spells.
    let first = set(ctx.vmm, json!(text));
    let Err(e) = first else { return Ok(()) };
    let typed = if let Ok(i) = text.parse::<i64>() {
        json!(i)
    } else if let Ok(u) = text.parse::<u64>() {
        json!(u)
    } else if let Ok(f) = text.parse::<f64>() {
        json!(f)
    } else {
        match text {
            "on" | "yes" | "true" => json!(true),
            "off" | "no" | "false" => json!(false),
            _ => return Err(e),
        }
    };
    set(ctx.vmm, typed)
}

fn sendkey(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let keys = str_arg(args, "keys").unwrap_or("");
    let mut list = Vec::new();
    for k in keys.split('-') {
        if k.is_empty() {
            return Err(Error::generic(format!("invalid parameter: {keys}")));
        }
        if let Some(raw) = k.strip_prefix('#') {
            let v = if let Some(h) = raw.strip_prefix("0x") {
                i64::from_str_radix(h, 16)
            } else {
                raw.parse()
            };
            let v = v.map_err(|_| Error::generic(format!("invalid parameter: {k}")))?;
            list.push(json!({"type": "number", "data": v}));
        } else {
            list.push(json!({"type": "qcode", "data": k}));
        }
    }
    let mut m = Map::new();
    m.insert("keys".into(), Value::Array(list));
    if let Some(h) = int_arg(args, "hold-time") {
        m.insert("hold-time".into(), json!(h));
    }
    qmp_call(ctx, "send-key", &m).map(drop)
}

/// Input from the monitor reaches the devices only while the guest runs
/// or sleeps; otherwise QEMU drops it without a word.
fn input_accepted(vmm: &Vmm) -> bool {
    matches!(vmm.vm.runstate(), RunState::Running | RunState::Suspended)
}

/// Sends each group of events and syncs after it (a wheel notch's
/// release is a group of its own), waking a suspended guest where the
/// devices ask it.
fn send_input(ctx: &mut Ctx<'_>, groups: &[Vec<InputEvent>]) -> Result<(), Error> {
    let vmm = &mut *ctx.vmm;
    let Some(m) = vmm.vm.machine.as_ref() else {
        return Ok(());
    };
    let mut wake = false;
    for group in groups {
        if !input_accepted(vmm) {
            continue;
        }
        for e in group {
            wake |= vmm.input.send(m, e).0;
        }
        wake |= vmm.input.sync(m).0;
    }
    if wake {
        vmm.system_wakeup()?;
    }
    Ok(())
}

fn rel(axis: InputAxis, value: i64) -> InputEvent {
    InputEvent::Rel(InputMoveEvent { axis, value })
}

fn btn(button: InputButton, down: bool) -> InputEvent {
    InputEvent::Btn(InputBtnEvent { button, down })
}

/// mouse_move: the numbers as C's strtol reads them (a bad one is 0),
/// cut to 32 bits; a wheel turn of any size is one notch, pressed in one
/// group and released in the next.
fn mouse_move(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let num =
        |key: &str| str_arg(args, key).map(|s| i64::from(crate::cmdline::strtol_prefix(s) as i32));
    let mut groups = vec![vec![
        rel(InputAxis::X, num("dx_str").unwrap_or(0)),
        rel(InputAxis::Y, num("dy_str").unwrap_or(0)),
    ]];
    if let Some(dz) = num("dz_str").filter(|dz| *dz != 0) {
        let wheel = if dz > 0 {
            InputButton::WheelUp
        } else {
            InputButton::WheelDown
        };
        groups[0].push(btn(wheel, true));
        groups.push(vec![btn(wheel, false)]);
    }
    send_input(ctx, &groups)
}

/// mouse_button: presses and releases what differs from the state it
/// set last (left, middle, right in that order), in one group.
fn mouse_button(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let state = int_arg(args, "button_state").unwrap_or(0);
    let old = ctx.vmm.input.hmp_buttons;
    if state == old {
        return Ok(());
    }
    let events: Vec<InputEvent> = crate::input::HMP_BUTTONS
        .iter()
        .filter(|(_, bit)| old & bit != state & bit)
        .map(|&(button, bit)| btn(button, state & bit != 0))
        .collect();
    ctx.vmm.input.hmp_buttons = state;
    send_input(ctx, &[events])
}

fn mouse_set(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let index = int_arg(args, "index").unwrap_or(0);
    if let Err(e) = ctx.vmm.input.set_current_mouse(index) {
        let _ = writeln!(ctx.out, "{e}");
    }
    Ok(())
}

/// `info network`: QEMU lists hubs, NICs and their backends; vmm has
/// no network backends or NICs yet (-netdev is refused), so there is
/// nothing to list.
fn info_network(_ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    Ok(())
}

/// `info block-jobs`, in QEMU's words for none.
fn info_block_jobs(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    if ctx.vmm.query_block_jobs()?.is_empty() {
        ctx.out.push_str("No active jobs\n");
    }
    Ok(())
}

/// `info vnc`: each VNC display; "None" without one.
fn info_vnc(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    if ctx.vmm.query_vnc_servers()?.is_empty() {
        ctx.out.push_str("None\n");
    }
    Ok(())
}

/// `info balloon`: the guest's balloon size in MiB.
fn info_balloon(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let info = ctx.vmm.query_balloon()?;
    let _ = writeln!(ctx.out, "balloon: actual={}", info.actual >> 20);
    Ok(())
}

/// `info tpm`: QEMU prints nothing without a TPM device, and vmm builds
/// none yet; the device lines come with the TPM.
fn info_tpm(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.query_tpm()?;
    Ok(())
}

/// `info memory-devices`: QEMU prints nothing without DIMMs, and vmm
/// has none yet; their lines come with pc-dimm.
fn info_memory_devices(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    ctx.vmm.query_memory_devices()?;
    Ok(())
}

fn info_mice(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let mice = ctx.vmm.query_mice()?;
    if mice.is_empty() {
        ctx.out.push_str("No mouse devices connected\n");
    }
    for m in mice {
        let _ = writeln!(
            ctx.out,
            "{} Mouse #{}: {}{}",
            if m.current { '*' } else { ' ' },
            m.index,
            m.name,
            if m.absolute { " (absolute)" } else { "" }
        );
    }
    Ok(())
}

fn ringbuf_read(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let data = ctx.vmm.ringbuf_read(RingbufReadArgs {
        device: str_arg(args, "device").unwrap_or("").to_string(),
        size: int_arg(args, "size").unwrap_or(0),
        format: None,
    })?;
    for ch in data.chars() {
        if ch == '\\' {
            ctx.out.push_str("\\\\");
        } else if (ch as u32) < 0x20 && ch != '\n' && ch != '\t' || ch as u32 == 0x7f {
            let _ = write!(ctx.out, "\\u{:04X}", ch as u32);
        } else {
            ctx.out.push(ch);
        }
    }
    ctx.out.push('\n');
    Ok(())
}

fn cpu_count(vmm: &Vmm) -> usize {
    vmm.vm.machine.as_ref().map_or(0, |m| m.cpu_count())
}

fn set_cpu(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let i = int_arg(args, "index").unwrap_or(-1);
    if i < 0 || i as usize >= cpu_count(ctx.vmm) {
        ctx.out.push_str("invalid CPU index\n");
    } else {
        ctx.state.cpu = i as usize;
    }
    Ok(())
}

fn qemu_io_command(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let device = str_arg(args, "device").unwrap_or("");
    let line = str_arg(args, "command").unwrap_or("");
    let node = ctx
        .vmm
        .block
        .lookup_bs(Some(device), Some(device))
        .map_err(|e| Error::generic(e.to_string()))?;
    qemu_io::run(&node, line, &mut ctx.out);
    Ok(())
}

fn memsave(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    ctx.vmm.memsave(MemsaveArgs {
        val: int_arg(args, "val").unwrap_or(0),
        size: int_arg(args, "size").unwrap_or(0),
        filename: str_arg(args, "filename").unwrap_or("").to_string(),
        cpu_index: Some(ctx.state.cpu as i64),
    })
}

fn fmt_of(args: &Args) -> (i64, u8, i64) {
    match args.get("fmt") {
        Some(Arg::Fmt {
            count,
            format,
            size,
        }) => (*count, *format, *size),
        _ => (1, b'x', 4),
    }
}

/// HMP `drive_add`: a `-drive` (its options, no implied key); as in
/// QEMU only `if=none` can be added once the machine exists, for a
/// device to use. QEMU numbers the other interfaces in its answer.
fn drive_add(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    if args.get("node") == Some(&Arg::Bool(true)) {
        return drive_add_node(ctx, str_arg(args, "opts").unwrap_or(""));
    }
    let opts =
        crate::cmdline::parse_group_string("drive", str_arg(args, "opts").unwrap_or(""), false)
            .map_err(|e| Error::generic(e.message))?;
    const INTERFACES: &[&str] = &[
        "none", "ide", "scsi", "floppy", "pflash", "mtd", "sd", "virtio", "xen",
    ];
    let interface = opts.get("if").unwrap_or("ide");
    if let Some(n) = INTERFACES
        .iter()
        .position(|i| *i == interface)
        .filter(|n| *n != 0)
    {
        let _ = writeln!(ctx.out, "Can't hot-add drive to type {n}");
        return Ok(());
    }
    let drive = ctx
        .vmm
        .block
        .drive_add(opts.id.as_deref(), &opts.items)
        .map_err(Error::from)?;
    for w in &drive.warnings {
        let _ = writeln!(ctx.out, "{w}");
    }
    ctx.out.push_str("OK\n");
    Ok(())
}

/// `drive_add -n ADDR OPTS`: a block node owned by the monitor, as
/// blockdev-add makes one, from flat `key=value` options; it must be
/// named.
fn drive_add_node(ctx: &mut Ctx<'_>, opts: &str) -> Result<(), Error> {
    let tree = crate::cmdline::keyval_parse(opts, None).map_err(|e| Error::generic(e.message))?;
    if tree.get("node-name").is_none() {
        ctx.out.push_str("'node-name' needs to be specified\n");
        return Ok(());
    }
    let options: BlockdevOptions = qmp::visit::from_keyval(&tree)?;
    ctx.vmm.blockdev_add(options)
}

/// HMP `commit DEVICE|all`, with QEMU's texts.
fn commit(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let device = str_arg(args, "device").unwrap_or("");
    let r = if device == "all" {
        ctx.vmm.block.commit_all()
    } else {
        match ctx.vmm.block.commit(device) {
            Ok(()) => Ok(()),
            Err(block::CommitError::NotFound) => {
                let _ = writeln!(ctx.out, "Device '{device}' not found");
                return Ok(());
            }
            Err(block::CommitError::NoMedium) => {
                let _ = writeln!(ctx.out, "Device '{device}' has no medium");
                return Ok(());
            }
            Err(block::CommitError::Io(e)) => Err(e),
        }
    };
    if let Err(e) = r {
        let _ = writeln!(
            ctx.out,
            "'commit' error for '{device}': {}",
            block::strerror(&e)
        );
    }
    Ok(())
}

/// HMP `drive_del`.
fn drive_del(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    ctx.vmm
        .block
        .drive_del(str_arg(args, "id").unwrap_or(""))
        .map_err(Error::from)
}

/// HMP `chardev-add`: a chardev from `-chardev` options.
fn chardev_add(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let spec = str_arg(args, "args").unwrap_or("");
    crate::chardevs::add_from_string(&mut ctx.vmm.chardevs, spec).map_err(Error::generic)
}

/// HMP `chardev-change`: the chardev's backend replaced, as QMP's
/// chardev-change does it.
fn chardev_change(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let backend = crate::chardevs::backend_from_string(str_arg(args, "args").unwrap_or(""))
        .map_err(Error::generic)?;
    ctx.vmm
        .chardev_change(qmp::qapi::ChardevChangeArgs {
            id: str_arg(args, "id").unwrap_or("").to_string(),
            backend,
        })
        .map(drop)
}

/// HMP `sum`: the BSD checksum (as the `sum` utility) of guest memory,
/// with QEMU's 32-bit address arithmetic.
fn memory_sum(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let start = int_arg(args, "start").unwrap_or(0) as u32;
    let size = int_arg(args, "size").unwrap_or(0) as u32;
    let mut sum: u16 = 0;
    if let Some(m) = ctx.vmm.vm.machine.as_ref() {
        let mut buf = vec![0u8; 4096];
        let mut addr = start;
        while addr < start.wrapping_add(size) {
            let n = (start.wrapping_add(size) - addr).min(4096) as usize;
            m.read_physical(u64::from(addr), &mut buf[..n]);
            for b in &buf[..n] {
                sum = sum.rotate_right(1).wrapping_add(u16::from(*b));
            }
            addr += n as u32;
        }
    }
    let _ = writeln!(ctx.out, "{sum:05}");
    Ok(())
}

/// The host mapping of guest-physical `addr` and its region's name,
/// with QEMU's texts for memory that is not RAM.
fn guest_ram_pointer(ctx: &Ctx<'_>, addr: u64) -> Result<(*mut u8, String), Error> {
    let not_mapped = || Error::generic(format!("No memory is mapped at address 0x{addr:x}"));
    let (name, ram) = mtree::system_region_at(ctx.vmm, addr).ok_or_else(not_mapped)?;
    if !ram {
        // QEMU's text, without the space it leaves out.
        return Err(Error::generic(format!(
            "Memory at address 0x{addr:x}is not RAM"
        )));
    }
    let m = ctx.vmm.vm.machine.as_ref().ok_or_else(not_mapped)?;
    let ptr = m.host_address(addr).ok_or_else(not_mapped)?;
    Ok((ptr, name))
}

fn gpa2hva(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let addr = int_arg(args, "addr").unwrap_or(0) as u64;
    let (ptr, name) = guest_ram_pointer(ctx, addr)?;
    let _ = writeln!(
        ctx.out,
        "Host virtual address for 0x{addr:x} ({name}) is {ptr:p}"
    );
    Ok(())
}

/// HMP `gpa2hpa`: the host page frame from /proc/self/pagemap (the
/// page is touched first, so that a copy-on-write page is the guest's
/// own); without the privilege to see frames the kernel answers 0.
fn gpa2hpa(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    let addr = int_arg(args, "addr").unwrap_or(0) as u64;
    let (ptr, name) = guest_ram_pointer(ctx, addr)?;
    // SAFETY: a page size query has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| {
        Error::generic(format!(
            "Cannot open /proc/self/pagemap: {}",
            block::strerror(&e)
        ))
    })?;
    // SAFETY: `ptr` is guest RAM this process maps read-write; adding 0
    // atomically changes nothing the guest sees.
    unsafe {
        (*(ptr as *const std::sync::atomic::AtomicU8))
            .fetch_add(0, std::sync::atomic::Ordering::SeqCst)
    };
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, ptr as u64 / page * 8)
        .map_err(|e| Error::generic(format!("Cannot read pagemap: {}", block::strerror(&e))))?;
    let entry = u64::from_le_bytes(entry);
    if entry & (1 << 63) == 0 {
        return Err(Error::generic("Page not present"));
    }
    let phys = ((entry & 0x007f_ffff_ffff_ffff) * page) | (ptr as u64 & (page - 1));
    let _ = writeln!(
        ctx.out,
        "Host physical address for 0x{addr:x} ({name}) is 0x{phys:x}"
    );
    Ok(())
}

/// The size `/fmt` gives a port access (b, w or l), 1 by default.
fn port_size(args: &Args) -> usize {
    match fmt_of(args).2 {
        2 => 2,
        4 => 4,
        _ => 1,
    }
}

/// HMP `i`: reads a port as a vCPU would, printed as QEMU prints it
/// (C's `%#0*x`: no prefix for 0).
fn ioport_read(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let mut addr = int_arg(args, "addr").unwrap_or(0);
    let size = port_size(args);
    let Some(m) = ctx.vmm.vm.machine.as_ref() else {
        return Ok(());
    };
    // `ADDR.INDEX`: the index goes to ADDR first, the value is read from
    // the next port (an index/data pair such as the CMOS's).
    if let Some(index) = int_arg(args, "index") {
        m.port_write((addr & 0xffff) as u16, 1, (index & 0xff) as u32);
        addr += 1;
    }
    let addr = (addr & 0xffff) as u16;
    let val = m.port_read(addr, size);
    let suffix = match size {
        2 => 'w',
        4 => 'l',
        _ => 'b',
    };
    let width = size * 2;
    let text = if val == 0 {
        format!("{:0width$}", 0)
    } else {
        format!("{val:#0w$x}", w = width.max(2))
    };
    let _ = writeln!(ctx.out, "port{suffix}[0x{addr:04x}] = {text}");
    Ok(())
}

/// HMP `o`: writes a port as a vCPU would.
fn ioport_write(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let addr = (int_arg(args, "addr").unwrap_or(0) & 0xffff) as u16;
    let val = int_arg(args, "val").unwrap_or(0) as u32;
    if let Some(m) = ctx.vmm.vm.machine.as_ref() {
        m.port_write(addr, port_size(args), val);
    }
    Ok(())
}

fn memory_dump_virtual(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    memory_dump(ctx, args, false)
}

fn memory_dump_physical(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    memory_dump(ctx, args, true)
}

/// A character as the monitor shows it: quoted, C escapes.
fn push_char(out: &mut String, v: u64) {
    out.push('\'');
    match v as u8 {
        b'\'' => out.push_str("\\'"),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        c @ 32..=126 => out.push(c as char),
        c => {
            let _ = write!(out, "\\x{c:02x}");
        }
    }
    out.push('\'');
}

/// `x` and `xp`: lines of 16 bytes (8 for bytes), each item in the format
/// asked for, padded to the width of its largest value.
fn memory_dump(ctx: &mut Ctx<'_>, args: &Args, physical: bool) -> Result<(), Error> {
    let (count, format, size) = fmt_of(args);
    let mut addr = int_arg(args, "addr").unwrap_or(0) as u64;
    if format == b'i' {
        return Err(Error::generic(
            "instruction disassembly (format 'i') is not available in vmm",
        ));
    }
    let cpu = ctx.state.cpu;
    let Some(machine) = ctx.vmm.vm.machine.as_mut() else {
        if !physical {
            return Err(Error::generic("No CPU available"));
        }
        return Ok(());
    };
    let mut wsize = size.max(1) as usize;
    let mut len = (wsize as i64).saturating_mul(count);
    let line_size = if wsize == 1 { 8 } else { 16 };
    let digits = match format {
        b'o' => (wsize * 8).div_ceil(3),
        b'u' | b'd' => (wsize * 8 * 10).div_ceil(33),
        b'c' => {
            wsize = 1;
            0
        }
        _ => wsize * 2,
    };
    let mut buf = [0u8; 16];
    while len > 0 {
        let _ = write!(ctx.out, "{addr:016x}:");
        let l = len.min(line_size) as usize;
        if physical {
            machine.read_physical(addr, &mut buf[..l]);
        } else {
            // Byte by byte across a page end, as a debugger access.
            let mut ok = true;
            let mut done = 0;
            while done < l {
                let va = addr.wrapping_add(done as u64);
                let chunk = (l - done).min(0x1000 - (va & 0xfff) as usize);
                match machine.translate(cpu, va) {
                    Some(pa) => machine.read_physical(pa, &mut buf[done..done + chunk]),
                    None => {
                        ok = false;
                        break;
                    }
                }
                done += chunk;
            }
            if !ok {
                ctx.out.push_str(" Cannot access memory\n");
                break;
            }
        }
        let mut i = 0;
        while i < l {
            let mut bytes = [0u8; 8];
            let n = wsize.min(l - i);
            bytes[..n].copy_from_slice(&buf[i..i + n]);
            let v = u64::from_le_bytes(bytes);
            ctx.out.push(' ');
            match format {
                b'o' => {
                    // C's %#*o: a leading 0 unless the value is 0.
                    let text = if v == 0 {
                        "0".to_string()
                    } else {
                        format!("0{v:o}")
                    };
                    let _ = write!(ctx.out, "{text:>digits$}");
                }
                b'u' => {
                    let _ = write!(ctx.out, "{v:>digits$}");
                }
                b'd' => {
                    let _ = write!(ctx.out, "{:>digits$}", v as i64);
                }
                b'c' => push_char(&mut ctx.out, v),
                _ => {
                    let _ = write!(ctx.out, "0x{v:0digits$x}");
                }
            }
            i += wsize;
        }
        ctx.out.push('\n');
        addr = addr.wrapping_add(l as u64);
        len -= l as i64;
    }
    Ok(())
}

fn print(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let (_, format, _) = fmt_of(args);
    let v = int_arg(args, "val").unwrap_or(0);
    match format {
        b'o' if v != 0 => {
            let _ = write!(ctx.out, "0{:o}", v as u64);
        }
        b'x' if v != 0 => {
            let _ = write!(ctx.out, "0x{:x}", v as u64);
        }
        b'o' | b'x' => ctx.out.push('0'),
        b'u' => {
            let _ = write!(ctx.out, "{}", v as u64);
        }
        b'c' => push_char(&mut ctx.out, v as u64),
        _ => {
            let _ = write!(ctx.out, "{v}");
        }
    }
    ctx.out.push('\n');
    Ok(())
}

fn info_version(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let v = ctx.vmm.query_version()?;
    let _ = writeln!(
        ctx.out,
        "{}.{}.{}{}",
        v.qemu.major, v.qemu.minor, v.qemu.micro, v.package
    );
    Ok(())
}

fn info_name(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    if let Some(name) = ctx.vmm.query_name()?.name {
        let _ = writeln!(ctx.out, "{name}");
    }
    Ok(())
}

fn info_uuid(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let u = ctx.vmm.query_uuid()?;
    let _ = writeln!(ctx.out, "{}", u.uuid);
    Ok(())
}

fn info_status(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let s = ctx.vmm.query_status()?;
    ctx.out.push_str("VM status: ");
    ctx.out
        .push_str(if s.running { "running" } else { "paused" });
    if s.singlestep {
        ctx.out.push_str(" (single step mode)");
    }
    if !s.running && s.status != RunState::Paused {
        let _ = write!(ctx.out, " ({})", s.status.as_str());
    }
    ctx.out.push('\n');
    Ok(())
}

fn info_kvm(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let k = ctx.vmm.query_kvm()?;
    let state = match (k.present, k.enabled) {
        (false, _) => "not compiled",
        (true, true) => "enabled",
        (true, false) => "disabled",
    };
    let _ = writeln!(ctx.out, "kvm support: {state}");
    Ok(())
}

fn info_cpus(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let cpus = ctx.vmm.query_cpus()?;
    for c in cpus {
        let active = if c.cpu as usize == ctx.state.cpu {
            '*'
        } else {
            ' '
        };
        let _ = write!(ctx.out, "{active} CPU #{}:", c.cpu);
        if let CpuInfoVariant::X86(x) = &c.u {
            let _ = write!(ctx.out, " pc=0x{:016x}", x.pc as u64);
        }
        if c.halted {
            ctx.out.push_str(" (halted)");
        }
        let _ = writeln!(ctx.out, " thread_id={}", c.thread_id);
    }
    Ok(())
}

fn info_registers(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let cpu = ctx.state.cpu;
    let Some(m) = ctx.vmm.vm.machine.as_mut() else {
        return Err(Error::generic("No CPU available"));
    };
    let Some(r) = m.cpu_registers(cpu) else {
        return Err(Error::generic("No CPU available"));
    };
    registers::dump(&mut ctx.out, &r);
    Ok(())
}

fn info_history(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    if let Some(h) = &ctx.state.history {
        for (i, line) in h.iter().enumerate() {
            let _ = writeln!(ctx.out, "{i}: '{line}'");
        }
    }
    Ok(())
}

fn info_chardev(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    for c in ctx.vmm.query_chardev()? {
        let _ = writeln!(ctx.out, "{}: filename={}", c.label, c.filename);
    }
    Ok(())
}

fn info_iothreads(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    for t in ctx.vmm.query_iothreads()? {
        let _ = writeln!(ctx.out, "{}:", t.id);
        let _ = writeln!(ctx.out, "  thread_id={}", t.thread_id);
        let _ = writeln!(ctx.out, "  poll-max-ns={}", t.poll_max_ns);
        let _ = writeln!(ctx.out, "  poll-grow={}", t.poll_grow);
        let _ = writeln!(ctx.out, "  poll-shrink={}", t.poll_shrink);
    }
    Ok(())
}

/// QMP `human-monitor-command`: a monitor of its own for one line, as
/// QEMU makes one; `cpu_index` chooses its current CPU.
pub fn human_monitor_command(
    vmm: &mut Vmm,
    line: &str,
    cpu_index: Option<i64>,
) -> Result<String, Error> {
    let mut state = HmpState::default();
    if let Some(i) = cpu_index {
        if i < 0 || i as usize >= cpu_count(vmm) {
            return Err(Error::generic("Parameter 'cpu-index' expects a CPU number"));
        }
        state.cpu = i as usize;
    }
    Ok(run_line(vmm, &mut state, line).replace('\n', "\r\n"))
}
