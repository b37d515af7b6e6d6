//! Every QMP command, through the trait generated from the schema. A
//! command whose subsystem has not landed yet says so; see
//! docs/qmp-coverage.md.

use crate::vm::{Cause, Vm};
use qmp::qapi::*;
use qmp::Error;
use serde_json::{Map, Value};
use std::io::Write;

/// The control plane's view of everything a command may touch.
pub struct Vmm {
    pub vm: Vm,
    /// `-name`.
    pub name: Option<String>,
    /// `-uuid`, in its canonical text form.
    pub uuid: String,
    pub kvm_present: bool,
    pub kvm_enabled: bool,
    /// The `package` string of the greeting and query-version.
    pub package: String,
    /// `-m`, in bytes.
    pub ram_size: u64,
    /// `-smp`.
    pub topology: crate::cmdline::SmpConfig,
    /// The `-cpu` model name (QEMU's default `qemu64`).
    pub cpu_model: String,
    /// The object tree (QOM): /machine, /objects, types and properties.
    pub qom: crate::qom::Qom,
    /// Every chardev, by label.
    pub chardevs: devices::chardev::Registry,
    /// The block graph: nodes, backends, drivers.
    pub block: block::BlockGraph,
    /// `-numa`: the guest's NUMA nodes (None without any).
    pub numa: Option<crate::numa::NumaConfig>,
    /// The input handlers (keyboard, mouse) and where events go.
    pub input: crate::input::Input,
    /// Migration status, capabilities and parameters.
    pub migration: crate::migration::Migration,
}

impl Vmm {
    /// Where CPU `index` sits (socket, core, thread and NUMA node), as
    /// QEMU's pc machine describes its CPU slots.
    pub fn cpu_instance_props(&self, index: u32) -> CpuInstanceProperties {
        let t = self.topology;
        let (socket, core, thread) = crate::numa::CpuSlots {
            maxcpus: t.maxcpus,
            cores: t.cores,
            threads: t.threads,
        }
        .props(index);
        CpuInstanceProperties {
            node_id: self
                .numa
                .as_ref()
                .and_then(|n| n.cpu_node.get(index as usize))
                .map(|n| i64::from(*n)),
            socket_id: Some(socket),
            core_id: Some(core),
            thread_id: Some(thread),
        }
    }
}

/// The command-line option groups, as query-command-line-options lists
/// them (built on demand: start-up should not pay for it).
fn option_groups() -> Vec<CommandLineOptionInfo> {
    crate::cmdline::command_line_options()
        .iter()
        .filter_map(|g| qmp::visit::from_value(&g.to_json()).ok())
        .collect()
}

fn not_implemented<T>(name: &str) -> Result<T, Error> {
    Err(Error::generic(format!(
        "Command '{name}' is not implemented yet"
    )))
}

/// Every migration setting that is refused is a GenericError.
fn migration_error(e: crate::migration::MigrationError) -> Error {
    Error::generic(e.to_string())
}

/// Errors of the run-state table are bugs, but a client gets an error,
/// never a crashed VMM.
fn internal(e: crate::runstate::InvalidTransition) -> Error {
    Error::generic(format!("Internal error: {e}"))
}

impl QmpCommands for Vmm {
    fn qmp_capabilities(&mut self) -> Result<(), Error> {
        // The monitor tracks negotiation itself; nothing else changes.
        Ok(())
    }

    fn query_version(&mut self) -> Result<VersionInfo, Error> {
        Ok(VersionInfo {
            qemu: VersionTriple {
                major: 2,
                minor: 11,
                micro: 50,
            },
            package: self.package.clone(),
        })
    }

    fn query_name(&mut self) -> Result<NameInfo, Error> {
        Ok(NameInfo {
            name: self.name.clone(),
        })
    }

    fn query_uuid(&mut self) -> Result<UuidInfo, Error> {
        Ok(UuidInfo {
            uuid: self.uuid.clone(),
        })
    }

    fn query_status(&mut self) -> Result<StatusInfo, Error> {
        Ok(StatusInfo {
            running: self.vm.is_running(),
            singlestep: false,
            status: self.vm.runstate(),
        })
    }

    fn query_kvm(&mut self) -> Result<KvmInfo, Error> {
        Ok(KvmInfo {
            enabled: self.kvm_enabled,
            present: self.kvm_present,
        })
    }

    fn query_target(&mut self) -> Result<TargetInfo, Error> {
        Ok(TargetInfo {
            arch: "x86_64".to_string(),
        })
    }

    fn query_commands(&mut self) -> Result<Vec<CommandInfo>, Error> {
        Ok(qmp::server::registered_commands()
            .into_iter()
            .map(|name| CommandInfo {
                name: name.to_string(),
            })
            .collect())
    }

    fn query_events(&mut self) -> Result<Vec<EventInfo>, Error> {
        // QEMU lists its event enum newest-registered first.
        let mut names: Vec<&str> = EVENT_NAMES.to_vec();
        names.sort_unstable();
        Ok(names
            .into_iter()
            .rev()
            .map(|name| EventInfo {
                name: name.to_string(),
            })
            .collect())
    }

    fn query_qmp_schema(&mut self, _args: &Map<String, Value>) -> Result<Value, Error> {
        // QEMU's handler ignores any arguments.
        serde_json::from_str(SCHEMA_INFO_JSON)
            .map_err(|e| Error::generic(format!("Internal error: {e}")))
    }

    fn query_machines(&mut self) -> Result<Vec<MachineInfo>, Error> {
        Ok(crate::machines::MACHINE_TYPES
            .iter()
            .map(|m| MachineInfo {
                name: m.name.to_string(),
                alias: m.alias.map(str::to_string),
                is_default: m.is_default.then_some(true),
                cpu_max: m.cpu_max,
                hotpluggable_cpus: m.hotpluggable_cpus,
            })
            .collect())
    }

    fn query_command_line_options(
        &mut self,
        args: QueryCommandLineOptionsArgs,
    ) -> Result<Vec<CommandLineOptionInfo>, Error> {
        match args.option {
            None => Ok(option_groups()),
            Some(option) => {
                let found: Vec<_> = option_groups()
                    .iter()
                    .filter(|g| g.option == option)
                    .cloned()
                    .collect();
                if found.is_empty() {
                    Err(Error::generic("Invalid parameter 'option'"))
                } else {
                    Ok(found)
                }
            }
        }
    }

    fn stop(&mut self) -> Result<(), Error> {
        if self.vm.runstate() == RunState::Inmigrate {
            self.vm.autostart = false;
            return Ok(());
        }
        self.vm.vm_stop(RunState::Paused).map_err(internal)
    }

    fn cont(&mut self) -> Result<(), Error> {
        if self.vm.needs_reset() {
            return Err(Error::generic("Resetting the Virtual Machine is required"));
        }
        if self.vm.runstate() == RunState::Suspended {
            return Ok(());
        }
        // As QEMU 2.11: the monitor's (named) backends start afresh;
        // those a device made for a node keep their status.
        for b in self.block.backends() {
            if !b.name().is_empty() {
                b.iostatus_reset();
            }
        }
        match self.vm.runstate() {
            RunState::Inmigrate => {
                self.vm.autostart = true;
                Ok(())
            }
            _ => self.vm.vm_start().map_err(internal),
        }
    }

    fn system_reset(&mut self) -> Result<(), Error> {
        self.vm.request_reset(Cause::HostQmp);
        Ok(())
    }

    fn system_powerdown(&mut self) -> Result<(), Error> {
        self.vm.request_powerdown();
        Ok(())
    }

    fn system_wakeup(&mut self) -> Result<(), Error> {
        // Only a suspended guest wakes up; otherwise nothing happens.
        self.vm.wakeup().map_err(internal)
    }

    fn quit(&mut self) -> Result<(), Error> {
        self.vm.no_shutdown = false;
        self.vm.request_shutdown(Cause::HostQmp);
        Ok(())
    }

    fn query_block(&mut self) -> Result<Vec<BlockInfo>, Error> {
        Ok(self.block.query_block())
    }

    fn query_blockstats(&mut self, args: QueryBlockstatsArgs) -> Result<Vec<BlockStats>, Error> {
        Ok(self
            .block
            .query_blockstats(args.query_nodes.unwrap_or(false)))
    }

    fn query_block_jobs(&mut self) -> Result<Vec<BlockJobInfo>, Error> {
        // No command that starts a block job has landed, so none runs.
        Ok(Vec::new())
    }

    fn block_passwd(&mut self, _args: BlockPasswdArgs) -> Result<(), Error> {
        not_implemented("block_passwd")
    }

    fn block_resize(&mut self, args: BlockResizeArgs) -> Result<(), Error> {
        self.block
            .block_resize(args.device.as_deref(), args.node_name.as_deref(), args.size)
            .map_err(Error::from)
    }

    fn blockdev_snapshot_sync(&mut self, _args: BlockdevSnapshotSync) -> Result<(), Error> {
        not_implemented("blockdev-snapshot-sync")
    }

    fn blockdev_snapshot(&mut self, _args: BlockdevSnapshot) -> Result<(), Error> {
        not_implemented("blockdev-snapshot")
    }

    fn change_backing_file(&mut self, _args: ChangeBackingFileArgs) -> Result<(), Error> {
        not_implemented("change-backing-file")
    }

    fn block_commit(&mut self, _args: BlockCommitArgs) -> Result<(), Error> {
        not_implemented("block-commit")
    }

    fn drive_backup(&mut self, _args: DriveBackup) -> Result<(), Error> {
        not_implemented("drive-backup")
    }

    fn blockdev_backup(&mut self, _args: BlockdevBackup) -> Result<(), Error> {
        not_implemented("blockdev-backup")
    }

    fn query_named_block_nodes(&mut self) -> Result<Vec<BlockDeviceInfo>, Error> {
        Ok(self.block.query_named_block_nodes())
    }

    fn drive_mirror(&mut self, _args: DriveMirror) -> Result<(), Error> {
        not_implemented("drive-mirror")
    }

    fn block_dirty_bitmap_add(&mut self, _args: BlockDirtyBitmapAdd) -> Result<(), Error> {
        not_implemented("block-dirty-bitmap-add")
    }

    fn block_dirty_bitmap_remove(&mut self, _args: BlockDirtyBitmap) -> Result<(), Error> {
        not_implemented("block-dirty-bitmap-remove")
    }

    fn block_dirty_bitmap_clear(&mut self, _args: BlockDirtyBitmap) -> Result<(), Error> {
        not_implemented("block-dirty-bitmap-clear")
    }

    fn blockdev_mirror(&mut self, _args: BlockdevMirrorArgs) -> Result<(), Error> {
        not_implemented("blockdev-mirror")
    }

    fn block_set_io_throttle(&mut self, _args: BlockIOThrottle) -> Result<(), Error> {
        not_implemented("block_set_io_throttle")
    }

    fn block_stream(&mut self, _args: BlockStreamArgs) -> Result<(), Error> {
        not_implemented("block-stream")
    }

    fn block_job_set_speed(&mut self, _args: BlockJobSetSpeedArgs) -> Result<(), Error> {
        not_implemented("block-job-set-speed")
    }

    fn block_job_cancel(&mut self, _args: BlockJobCancelArgs) -> Result<(), Error> {
        not_implemented("block-job-cancel")
    }

    fn block_job_pause(&mut self, _args: BlockJobPauseArgs) -> Result<(), Error> {
        not_implemented("block-job-pause")
    }

    fn block_job_resume(&mut self, _args: BlockJobResumeArgs) -> Result<(), Error> {
        not_implemented("block-job-resume")
    }

    fn block_job_complete(&mut self, _args: BlockJobCompleteArgs) -> Result<(), Error> {
        not_implemented("block-job-complete")
    }

    fn blockdev_add(&mut self, args: BlockdevOptions) -> Result<(), Error> {
        self.block
            .blockdev_add(&args)
            .map(drop)
            .map_err(Error::from)
    }

    fn blockdev_del(&mut self, args: BlockdevDelArgs) -> Result<(), Error> {
        self.block
            .blockdev_del(&args.node_name)
            .map_err(Error::from)
    }

    fn blockdev_open_tray(&mut self, _args: BlockdevOpenTrayArgs) -> Result<(), Error> {
        not_implemented("blockdev-open-tray")
    }

    fn blockdev_close_tray(&mut self, _args: BlockdevCloseTrayArgs) -> Result<(), Error> {
        not_implemented("blockdev-close-tray")
    }

    fn x_blockdev_remove_medium(&mut self, _args: XBlockdevRemoveMediumArgs) -> Result<(), Error> {
        not_implemented("x-blockdev-remove-medium")
    }

    fn x_blockdev_insert_medium(&mut self, _args: XBlockdevInsertMediumArgs) -> Result<(), Error> {
        not_implemented("x-blockdev-insert-medium")
    }

    fn blockdev_change_medium(&mut self, _args: BlockdevChangeMediumArgs) -> Result<(), Error> {
        not_implemented("blockdev-change-medium")
    }

    fn block_set_write_threshold(
        &mut self,
        _args: BlockSetWriteThresholdArgs,
    ) -> Result<(), Error> {
        not_implemented("block-set-write-threshold")
    }

    fn x_blockdev_change(&mut self, _args: XBlockdevChangeArgs) -> Result<(), Error> {
        not_implemented("x-blockdev-change")
    }

    fn blockdev_snapshot_internal_sync(
        &mut self,
        args: BlockdevSnapshotInternal,
    ) -> Result<(), Error> {
        let clock = self.vm.vm_clock_ns();
        self.block
            .snapshot_internal_create(&args.device, &args.name, clock)
            .map_err(Error::from)
    }

    fn blockdev_snapshot_delete_internal_sync(
        &mut self,
        args: BlockdevSnapshotDeleteInternalSyncArgs,
    ) -> Result<SnapshotInfo, Error> {
        self.block
            .snapshot_internal_delete(&args.device, args.id.as_deref(), args.name.as_deref())
            .map_err(Error::from)
    }

    fn eject(&mut self, _args: EjectArgs) -> Result<(), Error> {
        not_implemented("eject")
    }

    fn nbd_server_start(&mut self, _args: NbdServerStartArgs) -> Result<(), Error> {
        not_implemented("nbd-server-start")
    }

    fn nbd_server_add(&mut self, _args: NbdServerAddArgs) -> Result<(), Error> {
        not_implemented("nbd-server-add")
    }

    fn nbd_server_stop(&mut self) -> Result<(), Error> {
        not_implemented("nbd-server-stop")
    }

    fn query_chardev(&mut self) -> Result<Vec<ChardevInfo>, Error> {
        Ok(self.chardevs.query())
    }

    fn query_chardev_backends(&mut self) -> Result<Vec<ChardevBackendInfo>, Error> {
        Ok(devices::chardev::Registry::backends())
    }

    fn ringbuf_write(&mut self, args: RingbufWriteArgs) -> Result<(), Error> {
        self.chardevs
            .ringbuf_write(&args.device, &args.data, args.format)
            .map_err(Error::generic)
    }

    fn ringbuf_read(&mut self, args: RingbufReadArgs) -> Result<String, Error> {
        self.chardevs
            .ringbuf_read(&args.device, args.size, args.format)
            .map_err(Error::generic)
    }

    fn chardev_add(&mut self, args: ChardevAddArgs) -> Result<ChardevReturn, Error> {
        let (_, pty) = self
            .chardevs
            .add(&args.id, &args.backend)
            .map_err(Error::generic)?;
        Ok(ChardevReturn { pty })
    }

    fn chardev_change(&mut self, args: ChardevChangeArgs) -> Result<ChardevReturn, Error> {
        let pty = self
            .chardevs
            .change(&args.id, &args.backend)
            .map_err(Error::generic)?;
        Ok(ChardevReturn { pty })
    }

    fn chardev_remove(&mut self, args: ChardevRemoveArgs) -> Result<(), Error> {
        self.chardevs.remove(&args.id).map_err(Error::generic)
    }

    fn chardev_send_break(&mut self, args: ChardevSendBreakArgs) -> Result<(), Error> {
        self.chardevs.send_break(&args.id).map_err(Error::generic)
    }

    fn set_link(&mut self, _args: SetLinkArgs) -> Result<(), Error> {
        not_implemented("set_link")
    }

    fn netdev_add(&mut self, _args: &Map<String, Value>) -> Result<Value, Error> {
        not_implemented("netdev_add")
    }

    fn netdev_del(&mut self, _args: NetdevDelArgs) -> Result<(), Error> {
        not_implemented("netdev_del")
    }

    fn query_rx_filter(&mut self, _args: QueryRxFilterArgs) -> Result<Vec<RxFilterInfo>, Error> {
        not_implemented("query-rx-filter")
    }

    fn query_rocker(&mut self, _args: QueryRockerArgs) -> Result<RockerSwitch, Error> {
        not_implemented("query-rocker")
    }

    fn query_rocker_ports(
        &mut self,
        _args: QueryRockerPortsArgs,
    ) -> Result<Vec<RockerPort>, Error> {
        not_implemented("query-rocker-ports")
    }

    fn query_rocker_of_dpa_flows(
        &mut self,
        _args: QueryRockerOfDpaFlowsArgs,
    ) -> Result<Vec<RockerOfDpaFlow>, Error> {
        not_implemented("query-rocker-of-dpa-flows")
    }

    fn query_rocker_of_dpa_groups(
        &mut self,
        _args: QueryRockerOfDpaGroupsArgs,
    ) -> Result<Vec<RockerOfDpaGroup>, Error> {
        not_implemented("query-rocker-of-dpa-groups")
    }

    fn query_tpm_models(&mut self) -> Result<Vec<TpmModel>, Error> {
        not_implemented("query-tpm-models")
    }

    fn query_tpm_types(&mut self) -> Result<Vec<TpmType>, Error> {
        not_implemented("query-tpm-types")
    }

    fn query_tpm(&mut self) -> Result<Vec<TPMInfo>, Error> {
        // vmm builds no TPM device (-tpmdev is refused), so none is
        // listed.
        Ok(Vec::new())
    }

    fn set_password(&mut self, _args: SetPasswordArgs) -> Result<(), Error> {
        not_implemented("set_password")
    }

    fn expire_password(&mut self, _args: ExpirePasswordArgs) -> Result<(), Error> {
        not_implemented("expire_password")
    }

    fn screendump(&mut self, _args: ScreendumpArgs) -> Result<(), Error> {
        not_implemented("screendump")
    }

    fn query_spice(&mut self) -> Result<SpiceInfo, Error> {
        not_implemented("query-spice")
    }

    fn query_vnc(&mut self) -> Result<VncInfo, Error> {
        // No VNC server runs (-vnc is refused until it lands): QEMU's
        // answer for a display without one.
        Ok(VncInfo {
            enabled: false,
            host: None,
            family: None,
            service: None,
            auth: None,
            clients: None,
        })
    }

    fn query_vnc_servers(&mut self) -> Result<Vec<VncInfo2>, Error> {
        Ok(Vec::new())
    }

    fn change_vnc_password(&mut self, _args: ChangeVncPasswordArgs) -> Result<(), Error> {
        not_implemented("change-vnc-password")
    }

    fn query_mice(&mut self) -> Result<Vec<MouseInfo>, Error> {
        Ok(self.input.mice())
    }

    fn send_key(&mut self, args: SendKeyArgs) -> Result<(), Error> {
        // Numbers no key has are dropped, as QEMU drops them.
        let keys = args
            .keys
            .iter()
            .filter_map(|k| match k {
                KeyValue::Qcode(q) => devices::legacy::Key::from_qcode(q.as_str()),
                KeyValue::Number(n) => devices::legacy::Key::from_number(*n),
            })
            .collect();
        // hold-time: milliseconds, 100 when not given (the schema's doc).
        let hold = std::time::Duration::from_millis(args.hold_time.unwrap_or(100).max(0) as u64);
        let Some(m) = self.vm.machine.as_ref() else {
            return Err(Error::generic(
                "this feature or command is not currently supported",
            ));
        };
        // QEMU's input core drops what comes while the guest is stopped,
        // and the keyboard wakes a suspended guest at the first key.
        match self.vm.runstate() {
            RunState::Running => m.send_keys(keys, hold),
            RunState::Suspended => {
                m.send_keys(keys, hold);
                self.vm.wakeup().map_err(internal)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn input_send_event(&mut self, args: InputSendEventArgs) -> Result<(), Error> {
        // QEMU's checks, in its order: the console, the run state, a
        // handler for every event (the PS/2 keyboard takes keys, the
        // PS/2 mouse buttons and relative motion; nothing takes abs).
        if let Some(device) = &args.device {
            if self
                .qom
                .type_at(&format!("/machine/peripheral/{device}"))
                .is_none()
            {
                return Err(Error::device_not_found(format!(
                    "Device '{device}' not found"
                )));
            }
            return Err(Error::generic(format!(
                "Device {device} (head {}) is not bound to a QemuConsole",
                args.head.unwrap_or(0)
            )));
        }
        let state = self.vm.runstate();
        if state != RunState::Running && state != RunState::Suspended {
            return Err(Error::generic("VM not running"));
        }
        if let Some(e) = args
            .events
            .iter()
            .find(|e| !self.input.has_handler(e.kind()))
        {
            return Err(Error::generic(format!(
                "Input handler not found for event type {}",
                e.kind().as_str()
            )));
        }
        let Some(m) = self.vm.machine.as_ref() else {
            return Ok(());
        };
        let mut wake = false;
        for e in &args.events {
            wake |= self.input.send(m, e).0;
            // A key given by number goes through QEMU's key path, which
            // syncs every handler at once.
            if let InputEvent::Key(InputKeyEvent {
                key: KeyValue::Number(_),
                ..
            }) = e
            {
                wake |= self.input.sync(m).0;
            }
        }
        wake |= self.input.sync(m).0;
        if wake {
            self.vm.wakeup().map_err(internal)?;
        }
        Ok(())
    }

    fn query_migrate(&mut self) -> Result<MigrationInfo, Error> {
        Ok(self.migration.info())
    }

    fn migrate_set_capabilities(&mut self, args: MigrateSetCapabilitiesArgs) -> Result<(), Error> {
        self.migration
            .set_capabilities(&args.capabilities)
            .map_err(migration_error)
    }

    fn query_migrate_capabilities(&mut self) -> Result<Vec<MigrationCapabilityStatus>, Error> {
        Ok(self.migration.capabilities())
    }

    fn migrate_set_parameters(&mut self, args: MigrateSetParameters) -> Result<(), Error> {
        self.migration.set_parameters(args).map_err(migration_error)
    }

    fn query_migrate_parameters(&mut self) -> Result<MigrationParameters, Error> {
        Ok(self.migration.parameters())
    }

    fn client_migrate_info(&mut self, _args: ClientMigrateInfoArgs) -> Result<(), Error> {
        not_implemented("client_migrate_info")
    }

    fn migrate_start_postcopy(&mut self) -> Result<(), Error> {
        self.migration.start_postcopy().map_err(migration_error)
    }

    fn x_colo_lost_heartbeat(&mut self) -> Result<(), Error> {
        not_implemented("x-colo-lost-heartbeat")
    }

    fn migrate_cancel(&mut self) -> Result<(), Error> {
        self.migration.cancel();
        Ok(())
    }

    fn migrate_continue(&mut self, args: MigrateContinueArgs) -> Result<(), Error> {
        self.migration
            .resume_from(args.state)
            .map_err(migration_error)
    }

    fn migrate_set_downtime(&mut self, args: MigrateSetDowntimeArgs) -> Result<(), Error> {
        self.migration
            .set_downtime(args.value)
            .map_err(migration_error)
    }

    fn migrate_set_speed(&mut self, args: MigrateSetSpeedArgs) -> Result<(), Error> {
        self.migration
            .set_speed(args.value)
            .map_err(migration_error)
    }

    fn migrate_set_cache_size(&mut self, args: MigrateSetCacheSizeArgs) -> Result<(), Error> {
        self.migration
            .set_cache_size(args.value)
            .map_err(migration_error)
    }

    fn query_migrate_cache_size(&mut self) -> Result<i64, Error> {
        Ok(self.migration.cache_size())
    }

    fn migrate(&mut self, _args: MigrateArgs) -> Result<(), Error> {
        not_implemented("migrate")
    }

    fn migrate_incoming(&mut self, _args: MigrateIncomingArgs) -> Result<(), Error> {
        not_implemented("migrate-incoming")
    }

    fn xen_save_devices_state(&mut self, _args: XenSaveDevicesStateArgs) -> Result<(), Error> {
        not_implemented("xen-save-devices-state")
    }

    fn xen_set_replication(&mut self, _args: XenSetReplicationArgs) -> Result<(), Error> {
        not_implemented("xen-set-replication")
    }

    fn query_xen_replication_status(&mut self) -> Result<ReplicationStatus, Error> {
        not_implemented("query-xen-replication-status")
    }

    fn xen_colo_do_checkpoint(&mut self) -> Result<(), Error> {
        not_implemented("xen-colo-do-checkpoint")
    }

    fn transaction(&mut self, args: TransactionArgs) -> Result<(), Error> {
        // All or nothing, as QEMU: an action vmm cannot carry out yet
        // refuses the whole transaction before anything happens.
        for a in &args.actions {
            match a {
                TransactionAction::Abort(_)
                | TransactionAction::BlockdevSnapshotInternalSync(_) => {}
                other => {
                    return Err(Error::generic(format!(
                        "not available yet: transaction action '{}' is not implemented in vmm",
                        other.kind().as_str()
                    )))
                }
            }
        }
        let clock = self.vm.vm_clock_ns();
        let mut created: Vec<(String, String)> = Vec::new();
        for a in &args.actions {
            let r = match a {
                TransactionAction::BlockdevSnapshotInternalSync(s) => self
                    .block
                    .snapshot_internal_create(&s.device, &s.name, clock)
                    .map(|()| created.push((s.device.clone(), s.name.clone())))
                    .map_err(Error::from),
                _ => Err(Error::generic("Transaction aborted using Abort action")),
            };
            if let Err(e) = r {
                // Abort: what the earlier actions made goes again.
                for (device, name) in created.iter().rev() {
                    let _ = self
                        .block
                        .snapshot_internal_delete(device, None, Some(name));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn trace_event_get_state(
        &mut self,
        _args: TraceEventGetStateArgs,
    ) -> Result<Vec<TraceEventInfo>, Error> {
        not_implemented("trace-event-get-state")
    }

    fn trace_event_set_state(&mut self, _args: TraceEventSetStateArgs) -> Result<(), Error> {
        not_implemented("trace-event-set-state")
    }

    fn add_client(&mut self, _args: AddClientArgs) -> Result<(), Error> {
        not_implemented("add_client")
    }

    fn query_cpus(&mut self) -> Result<Vec<CpuInfo>, Error> {
        let Some(m) = self.vm.machine.as_mut() else {
            return Ok(vec![]);
        };
        let states = m.cpu_states();
        Ok(states
            .into_iter()
            .enumerate()
            .map(|(i, (pc, halted, tid))| CpuInfo {
                cpu: i as i64,
                current: i == 0,
                halted,
                qom_path: format!("/machine/unattached/device[{i}]"),
                thread_id: i64::from(tid),
                props: Some(self.cpu_instance_props(i as u32)),
                u: CpuInfoVariant::X86(CpuInfoX86 { pc: pc as i64 }),
            })
            .collect())
    }

    fn query_iothreads(&mut self) -> Result<Vec<IOThreadInfo>, Error> {
        Ok(self.qom.iothreads())
    }

    fn query_balloon(&mut self) -> Result<BalloonInfo, Error> {
        // vmm has no balloon device type yet, so none can be active.
        Err(Error::new(
            QapiErrorClass::DeviceNotActive,
            "No balloon device has been activated",
        ))
    }

    fn query_pci(&mut self) -> Result<Vec<PciInfo>, Error> {
        let Some(m) = self.vm.machine.as_ref() else {
            return Ok(vec![]);
        };
        let devices = m
            .pci_functions()
            .into_iter()
            .map(|f| PciDeviceInfo {
                bus: 0,
                slot: i64::from(f.slot),
                function: i64::from(f.function),
                class_info: PciDeviceClass {
                    desc: f.class_description.map(str::to_string),
                    class: i64::from(f.class),
                },
                id: PciDeviceId {
                    device: i64::from(f.device),
                    vendor: i64::from(f.vendor),
                },
                irq: f.irq.map(i64::from),
                qdev_id: f.qdev_id,
                pci_bridge: None,
                regions: f
                    .regions
                    .into_iter()
                    .map(
                        |(bar, io, address, size, prefetch, mem64)| PciMemoryRegion {
                            bar: bar as i64,
                            r#type: if io { "io" } else { "memory" }.to_string(),
                            address: address as i64,
                            size: size as i64,
                            prefetch: (!io).then_some(prefetch),
                            mem_type_64: (!io).then_some(mem64),
                        },
                    )
                    .collect(),
            })
            .collect();
        Ok(vec![PciInfo { bus: 0, devices }])
    }

    fn cpu(&mut self, _args: CpuArgs) -> Result<(), Error> {
        not_implemented("cpu")
    }

    fn cpu_add(&mut self, _args: CpuAddArgs) -> Result<(), Error> {
        not_implemented("cpu-add")
    }

    fn memsave(&mut self, args: MemsaveArgs) -> Result<(), Error> {
        let cpu = args.cpu_index.unwrap_or(0);
        let count = self.vm.machine.as_ref().map_or(0, |m| m.cpu_count());
        if cpu < 0 || cpu as usize >= count {
            return Err(Error::generic("Parameter 'cpu-index' expects a CPU number"));
        }
        let mut f = std::fs::File::create(&args.filename)
            .map_err(|_| Error::generic(format!("Could not open '{}'", args.filename)))?;
        let Some(m) = self.vm.machine.as_mut() else {
            return Ok(());
        };
        let (mut addr, mut left) = (args.val as u64, args.size.max(0) as u64);
        let mut page = vec![0u8; 0x1000];
        while left > 0 {
            let n = left.min(0x1000 - (addr & 0xfff));
            let Some(gpa) = m.translate(cpu as usize, addr) else {
                return Err(Error::generic(format!(
                    "Invalid addr 0x{:016x}/size {} specified",
                    args.val, args.size
                )));
            };
            m.read_physical(gpa, &mut page[..n as usize]);
            f.write_all(&page[..n as usize])
                .map_err(|e| Error::generic(format!("writing '{}': {e}", args.filename)))?;
            addr = addr.wrapping_add(n);
            left -= n;
        }
        Ok(())
    }

    fn pmemsave(&mut self, args: PmemsaveArgs) -> Result<(), Error> {
        let mut f = std::fs::File::create(&args.filename)
            .map_err(|_| Error::generic(format!("Could not open '{}'", args.filename)))?;
        let Some(m) = self.vm.machine.as_ref() else {
            return Ok(());
        };
        let mut buf = vec![0u8; 1 << 16];
        let (mut addr, mut left) = (args.val as u64, args.size.max(0) as u64);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            m.read_physical(addr, &mut buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| Error::generic(format!("writing '{}': {e}", args.filename)))?;
            addr = addr.wrapping_add(n as u64);
            left -= n as u64;
        }
        Ok(())
    }

    fn inject_nmi(&mut self) -> Result<(), Error> {
        match self.vm.machine.as_mut() {
            Some(m) => m.inject_nmi().map_err(|e| Error::generic(e.to_string())),
            None => Err(Error::generic(
                "this feature or command is not currently supported",
            )),
        }
    }

    fn balloon(&mut self, _args: BalloonArgs) -> Result<(), Error> {
        not_implemented("balloon")
    }

    fn human_monitor_command(&mut self, args: HumanMonitorCommandArgs) -> Result<String, Error> {
        crate::hmp::human_monitor_command(self, &args.command_line, args.cpu_index)
    }

    fn qom_list(&mut self, args: QomListArgs) -> Result<Vec<ObjectPropertyInfo>, Error> {
        self.qom.list(&args.path)
    }

    fn qom_get(&mut self, args: QomGetArgs) -> Result<Value, Error> {
        self.qom.get(&args.path, &args.property)
    }

    fn qom_set(&mut self, args: QomSetArgs) -> Result<(), Error> {
        self.qom
            .set(&args.path, &args.property, &args.value, &self.chardevs)
    }

    fn change(&mut self, _args: ChangeArgs) -> Result<(), Error> {
        not_implemented("change")
    }

    fn qom_list_types(&mut self, args: QomListTypesArgs) -> Result<Vec<ObjectTypeInfo>, Error> {
        Ok(crate::qom::Qom::list_types(
            args.implements.as_deref(),
            args.r#abstract.unwrap_or(false),
        ))
    }

    fn device_list_properties(
        &mut self,
        args: DeviceListPropertiesArgs,
    ) -> Result<Vec<DevicePropertyInfo>, Error> {
        crate::qom::devices::list_properties(&args.typename)
    }

    fn xen_set_global_dirty_log(&mut self, _args: XenSetGlobalDirtyLogArgs) -> Result<(), Error> {
        not_implemented("xen-set-global-dirty-log")
    }

    fn device_add(&mut self, args: &Map<String, Value>) -> Result<Value, Error> {
        let opts = crate::qdev::opts_from_qmp(args, &self.qom)?;
        let prelaunch = self.vm.runstate() == RunState::Prelaunch;
        let mut plug = crate::qdev::Plug {
            machine: self.vm.machine.as_mut(),
            qom: &mut self.qom,
            block: &mut self.block,
            hotplug: true,
            prelaunch,
        };
        crate::qdev::device_add(&mut plug, &opts)?;
        Ok(Value::Object(Map::new()))
    }

    fn device_del(&mut self, args: DeviceDelArgs) -> Result<(), Error> {
        crate::qdev::device_del(&self.qom, &args.id)
    }

    fn dump_guest_memory(&mut self, _args: DumpGuestMemoryArgs) -> Result<(), Error> {
        not_implemented("dump-guest-memory")
    }

    fn query_dump(&mut self) -> Result<DumpQueryResult, Error> {
        not_implemented("query-dump")
    }

    fn query_dump_guest_memory_capability(&mut self) -> Result<DumpGuestMemoryCapability, Error> {
        not_implemented("query-dump-guest-memory-capability")
    }

    fn dump_skeys(&mut self, _args: DumpSkeysArgs) -> Result<(), Error> {
        not_implemented("dump-skeys")
    }

    fn object_add(&mut self, args: ObjectAddArgs) -> Result<(), Error> {
        self.qom.object_add(
            &args.qom_type,
            &args.id,
            args.props.as_ref(),
            &self.chardevs,
        )
    }

    fn object_del(&mut self, args: ObjectDelArgs) -> Result<(), Error> {
        self.qom.object_del(&args.id)
    }

    fn getfd(&mut self, _args: GetfdArgs) -> Result<(), Error> {
        not_implemented("getfd")
    }

    fn closefd(&mut self, _args: ClosefdArgs) -> Result<(), Error> {
        not_implemented("closefd")
    }

    fn query_memory_size_summary(&mut self) -> Result<MemoryInfo, Error> {
        Ok(MemoryInfo {
            base_memory: self.ram_size,
            plugged_memory: Some(0),
        })
    }

    fn query_cpu_definitions(&mut self) -> Result<Vec<CpuDefinitionInfo>, Error> {
        not_implemented("query-cpu-definitions")
    }

    fn query_cpu_model_expansion(
        &mut self,
        _args: QueryCpuModelExpansionArgs,
    ) -> Result<CpuModelExpansionInfo, Error> {
        not_implemented("query-cpu-model-expansion")
    }

    fn query_cpu_model_comparison(
        &mut self,
        _args: QueryCpuModelComparisonArgs,
    ) -> Result<CpuModelCompareInfo, Error> {
        not_implemented("query-cpu-model-comparison")
    }

    fn query_cpu_model_baseline(
        &mut self,
        _args: QueryCpuModelBaselineArgs,
    ) -> Result<CpuModelBaselineInfo, Error> {
        not_implemented("query-cpu-model-baseline")
    }

    fn add_fd(&mut self, _args: AddFdArgs) -> Result<AddfdInfo, Error> {
        not_implemented("add-fd")
    }

    fn remove_fd(&mut self, _args: RemoveFdArgs) -> Result<(), Error> {
        not_implemented("remove-fd")
    }

    fn query_fdsets(&mut self) -> Result<Vec<FdsetInfo>, Error> {
        not_implemented("query-fdsets")
    }

    fn query_memdev(&mut self) -> Result<Vec<Memdev>, Error> {
        Ok(self.qom.memdevs())
    }

    fn query_memory_devices(&mut self) -> Result<Vec<MemoryDeviceInfo>, Error> {
        // vmm has no pc-dimm or nvdimm device type, so none is plugged.
        Ok(Vec::new())
    }

    fn query_acpi_ospm_status(&mut self) -> Result<Vec<ACPIOSTInfo>, Error> {
        not_implemented("query-acpi-ospm-status")
    }

    fn rtc_reset_reinjection(&mut self) -> Result<(), Error> {
        not_implemented("rtc-reset-reinjection")
    }

    fn xen_load_devices_state(&mut self, _args: XenLoadDevicesStateArgs) -> Result<(), Error> {
        not_implemented("xen-load-devices-state")
    }

    fn query_gic_capabilities(&mut self) -> Result<Vec<GICCapability>, Error> {
        not_implemented("query-gic-capabilities")
    }

    fn query_hotpluggable_cpus(&mut self) -> Result<Vec<HotpluggableCPU>, Error> {
        let present = self.vm.machine.as_ref().map_or(0, |m| m.cpu_count());
        // QEMU lists every possible CPU, the highest first.
        Ok((0..self.topology.maxcpus)
            .rev()
            .map(|i| HotpluggableCPU {
                r#type: format!("{}-x86_64-cpu", self.cpu_model),
                vcpus_count: 1,
                props: self.cpu_instance_props(i),
                qom_path: ((i as usize) < present)
                    .then(|| format!("/machine/unattached/device[{i}]")),
            })
            .collect())
    }

    fn query_vm_generation_id(&mut self) -> Result<GuidInfo, Error> {
        not_implemented("query-vm-generation-id")
    }

    fn watchdog_set_action(&mut self, _args: WatchdogSetActionArgs) -> Result<(), Error> {
        not_implemented("watchdog-set-action")
    }
}
