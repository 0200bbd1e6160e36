//! `build_raid`: an md array with mdadm.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rackboot_agent_proto::{RaidAction, RaidBuilt, error_codes};

use crate::alog;
use crate::blockdev::Device;
use crate::context::{StepContext, StepError};
use crate::{disk, tools};

/// `KEY=VALUE` lines of `mdadm --detail --export`.
pub fn parse_mdadm_export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

/// The `mdadm --create` arguments for an action (members already resolved).
pub fn create_args(action: &RaidAction, members: &[String]) -> Vec<String> {
    let mut args = vec![
        "--create".to_string(),
        action.device.clone(),
        "--run".into(),
        format!("--metadata={}", action.metadata),
        format!("--level={}", action.level.as_str()),
        format!("--raid-devices={}", members.len()),
        format!("--name={}", action.name),
    ];
    if action.assume_clean {
        args.push("--assume-clean".into());
    }
    args.extend(members.iter().cloned());
    args
}

/// The `build_raid` step.
pub fn run(ctx: &StepContext, action: &RaidAction) -> Result<RaidBuilt, StepError> {
    if ctx.env.sim.is_some() {
        return Err(StepError::new(
            error_codes::UNSUPPORTED,
            "build_raid is not supported in simulation mode",
            false,
        ));
    }
    if action.members.len() < action.level.min_members() {
        return Err(StepError::new(
            error_codes::DISK_MISMATCH,
            format!(
                "RAID {} needs at least {} members, {} given",
                action.level.as_str(),
                action.level.min_members(),
                action.members.len()
            ),
            false,
        ));
    }
    if !matches!(action.metadata.as_str(), "1.0" | "1.1" | "1.2" | "0.90") {
        return Err(StepError::new(
            error_codes::UNSUPPORTED,
            format!("md metadata {:?} is not one mdadm knows", action.metadata),
            false,
        ));
    }
    let mut members = Vec::new();
    for target in &action.members {
        let d = disk::resolve(&ctx.env, target)?;
        members.push(d.dev.to_string_lossy().into_owned());
    }
    ctx.progress.set(
        0,
        None,
        format!(
            "creating {} (RAID {})",
            action.device,
            action.level.as_str()
        ),
    );
    for m in &members {
        ctx.check_cancel()?;
        // Exit 1 with "Unrecognised md component device" when there is no
        // superblock: nothing to clear, which is what we want.
        if let Err(e) = tools::run("mdadm", &["--zero-superblock", "--force", m])
            && !e.message.contains("Unrecognised md component")
            && !e.message.contains("Couldn't open")
        {
            return Err(e);
        }
    }
    ctx.check_cancel()?;
    let args = create_args(action, &members);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tools::run("mdadm", &args)?;
    wait_for_node(Path::new(&action.device), Duration::from_secs(10))?;
    let detail = tools::run("mdadm", &["--detail", "--export", &action.device])?;
    let fields = parse_mdadm_export(&detail);
    let uuid = fields.get("MD_UUID").cloned().ok_or_else(|| {
        StepError::new(
            error_codes::TOOL,
            format!(
                "mdadm --detail --export {} printed no MD_UUID",
                action.device
            ),
            false,
        )
    })?;
    let size_bytes = Device::open_read_only(Path::new(&action.device))
        .map_err(|e| StepError::io(&action.device, e))?
        .size();
    alog!(
        "created {} (uuid {uuid}, {size_bytes} bytes) from {}",
        action.device,
        members.join(" ")
    );
    Ok(RaidBuilt {
        device: action.device.clone(),
        uuid,
        members,
        size_bytes,
    })
}

/// mdadm creates the node (and `/dev/md/NAME`) itself when no udev runs;
/// with udev it may appear a moment later.
pub fn wait_for_node(path: &Path, limit: Duration) -> Result<(), StepError> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(StepError::new(
                error_codes::TOOL,
                format!("{} did not appear within {limit:?}", path.display()),
                true,
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_agent_proto::RaidLevel;

    #[test]
    fn mdadm_export_output() {
        // mdadm 4.2 --detail --export of a RAID-1 with metadata 1.0.
        let text = "MD_LEVEL=raid1\nMD_DEVICES=2\nMD_METADATA=1.0\nMD_UUID=3f6f0a3e:8e0d7f52:5d3c1b2a:9a8b7c6d\nMD_DEVNAME=rackboot0\nMD_NAME=any:rackboot0\nMD_DEVICE_dev_loop1_ROLE=1\nMD_DEVICE_dev_loop1_DEV=/dev/loop1\nMD_DEVICE_dev_loop0_ROLE=0\nMD_DEVICE_dev_loop0_DEV=/dev/loop0\n";
        let f = parse_mdadm_export(text);
        assert_eq!(f["MD_UUID"], "3f6f0a3e:8e0d7f52:5d3c1b2a:9a8b7c6d");
        assert_eq!(f["MD_LEVEL"], "raid1");
        assert_eq!(f["MD_DEVICE_dev_loop0_DEV"], "/dev/loop0");
        assert_eq!(f.len(), 10);
        assert!(parse_mdadm_export("mdadm: cannot open /dev/md0\n").is_empty());
    }

    #[test]
    fn create_arguments() {
        let action = RaidAction {
            device: "/dev/md/rackboot0".into(),
            name: "rackboot0".into(),
            level: RaidLevel::Raid1,
            members: vec![],
            metadata: "1.0".into(),
            assume_clean: true,
        };
        assert_eq!(
            create_args(&action, &["/dev/sda".into(), "/dev/sdb".into()]).join(" "),
            "--create /dev/md/rackboot0 --run --metadata=1.0 --level=1 --raid-devices=2 \
             --name=rackboot0 --assume-clean /dev/sda /dev/sdb"
        );
    }
}
