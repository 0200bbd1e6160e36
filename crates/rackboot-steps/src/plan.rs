//! The agent action for a step: which disks, which image, which files, from
//! the request, the machine's facts and what earlier steps produced. The
//! server decides all of it (the agent has no policy), and a step that has
//! nothing to do for this machine is skipped with the reason.

use rackboot_agent_proto::{
    Action, ConfigureAction, DiskFacts, DiskTarget, EraseAction, Facts, FileSpec, RaidAction,
    RootSelector, SeedSpec, StepOutput, WriteImageAction,
};
use rackboot_core::{StepState, Workflow};
use rackboot_install::{
    SeedInput, render_nocloud_seed, render_target_network, target_cleanup_paths,
};

use crate::library::{StepKind, StepParams};
use crate::request::{RootDisk, WorkflowRequest};

/// What the plan needs to know.
pub struct PlanContext<'a> {
    pub workflow: &'a Workflow,
    pub request: &'a WorkflowRequest,
    /// The machine's facts (from this workflow's inspection, or an earlier one).
    pub facts: Option<&'a Facts>,
    /// Boot HTTP as the machine reaches it: `http://10.77.0.1:8080`.
    pub base_url: &'a str,
    /// The deploy's first-boot callback (its token included), for the seed.
    pub booted_url: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Run(Action),
    /// Nothing to do for this machine; the reason goes on its timeline.
    Skip(String),
}

/// Name of the md array rackboot builds.
pub const RAID_NAME: &str = "rackboot0";
/// Size of the cloud-init seed partition.
pub const SEED_MIB: u32 = 16;

/// The action of agent step `kind` (with its checked `params`).
pub fn agent_action(
    kind: StepKind,
    params: &StepParams,
    cx: &PlanContext,
) -> Result<Planned, String> {
    match kind {
        StepKind::Inspect => Ok(Planned::Run(Action::Inspect {
            lldp_wait_secs: match params {
                StepParams::Inspect(w) => w.lldp_wait_secs,
                _ => 0,
            },
        })),
        StepKind::Erase => erase(params, cx),
        StepKind::BuildRaid => build_raid(cx),
        StepKind::WriteImage => write_image(cx),
        StepKind::Configure => configure(cx),
        other => Err(format!("{other} does not run in the agent")),
    }
}

fn facts<'a>(cx: &PlanContext<'a>) -> Result<&'a Facts, String> {
    cx.facts
        .ok_or_else(|| "the machine has no hardware facts: run an inspect step first".to_string())
}

/// Disks an OS may go on: not removable, at least 64 MiB (smaller ones are
/// BMC virtual media and the like).
pub fn eligible_disks(facts: &Facts) -> Vec<&DiskFacts> {
    let mut disks: Vec<&DiskFacts> = facts
        .disks
        .iter()
        .filter(|d| !d.removable && d.size_bytes >= 64 << 20)
        .collect();
    disks.sort_by(|a, b| a.size_bytes.cmp(&b.size_bytes).then(a.name.cmp(&b.name)));
    disks
}

fn target_of(d: &DiskFacts) -> DiskTarget {
    DiskTarget {
        path: if d.path.is_empty() {
            format!("/dev/{}", d.name)
        } else {
            d.path.clone()
        },
        size_bytes: Some(d.size_bytes),
        serial: d.serial.clone(),
    }
}

/// The output of the workflow's succeeded step that `uses` this kind.
fn output_of(workflow: &Workflow, kind: StepKind) -> Option<StepOutput> {
    workflow
        .steps
        .iter()
        .filter(|s| s.uses == kind.as_str() && s.state == StepState::Succeeded)
        .find_map(|s| serde_json::from_value(s.output.clone()).ok())
}

fn erase(params: &StepParams, cx: &PlanContext) -> Result<Planned, String> {
    let policy = match params {
        StepParams::Erase(w) => w.mode.unwrap_or(cx.request.erase),
        _ => cx.request.erase,
    };
    let Some(mode) = policy.mode() else {
        return Ok(Planned::Skip("the erase policy is none".into()));
    };
    let disks: Vec<DiskTarget> = eligible_disks(facts(cx)?)
        .into_iter()
        .map(target_of)
        .collect();
    if disks.is_empty() {
        return Ok(Planned::Skip("the machine has no disks".into()));
    }
    Ok(Planned::Run(Action::Erase(EraseAction { mode, disks })))
}

fn raid_members<'a>(
    facts: &'a Facts,
    raid: &crate::request::RaidRequest,
) -> Result<Vec<&'a DiskFacts>, String> {
    let disks = eligible_disks(facts);
    let wanted = raid.disks.map_or(disks.len(), |n| n as usize);
    if wanted < raid.level.min_members() || disks.len() < wanted {
        return Err(format!(
            "RAID-{} over {wanted} disks needs at least {} and the machine has {} eligible disk(s)",
            raid.level.as_str(),
            raid.level.min_members(),
            disks.len()
        ));
    }
    Ok(disks.into_iter().take(wanted).collect())
}

fn build_raid(cx: &PlanContext) -> Result<Planned, String> {
    let Some(raid) = &cx.request.raid else {
        return Ok(Planned::Skip("no RAID was asked for".into()));
    };
    let members = raid_members(facts(cx)?, raid)?;
    // Members that a full erase zeroed are already equal: no initial resync.
    let zeroed = fully_erased(cx.workflow);
    let assume_clean = members.iter().all(|d| zeroed.contains(&target_of(d).path));
    Ok(Planned::Run(Action::BuildRaid(RaidAction {
        device: format!("/dev/md/{RAID_NAME}"),
        name: RAID_NAME.into(),
        level: raid.level,
        members: members.into_iter().map(target_of).collect(),
        metadata: raid.metadata().to_string(),
        assume_clean,
    })))
}

/// Disks this workflow's erase step wrote zeros over entirely.
fn fully_erased(workflow: &Workflow) -> Vec<String> {
    match output_of(workflow, StepKind::Erase) {
        Some(StepOutput::Erased { disks }) => disks
            .into_iter()
            .filter(|d| d.method != "zero_ends")
            .map(|d| d.path)
            .collect(),
        _ => Vec::new(),
    }
}

/// Where the image goes: the array this workflow built, else the root disk.
pub fn image_target(cx: &PlanContext) -> Result<DiskTarget, String> {
    if let Some(StepOutput::RaidBuilt(raid)) = output_of(cx.workflow, StepKind::BuildRaid) {
        return Ok(DiskTarget {
            path: raid.device,
            size_bytes: Some(raid.size_bytes),
            serial: None,
        });
    }
    let facts = facts(cx)?;
    let need = cx.request.image_raw_size.unwrap_or(0);
    let disks = eligible_disks(facts);
    let fits: Vec<&DiskFacts> = disks
        .iter()
        .copied()
        .filter(|d| d.size_bytes >= need)
        .collect();
    let chosen = match &cx.request.root_disk {
        RootDisk::Smallest => fits.first().copied(),
        RootDisk::Largest => fits.last().copied(),
        RootDisk::Name(n) => disks.iter().copied().find(|d| &d.name == n),
        RootDisk::Serial(s) => disks.iter().copied().find(|d| d.serial.as_ref() == Some(s)),
        RootDisk::Wwn(w) => disks.iter().copied().find(|d| d.wwn.as_ref() == Some(w)),
    };
    let disk = chosen.ok_or_else(|| match &cx.request.root_disk {
        RootDisk::Smallest | RootDisk::Largest => format!(
            "no disk holds the image ({need} bytes); the machine's disks: {}",
            describe(&disks)
        ),
        other => format!(
            "no disk matches root_disk {other:?}; the machine's disks: {}",
            describe(&disks)
        ),
    })?;
    if disk.size_bytes < need {
        return Err(format!(
            "disk {} ({} bytes) is smaller than the image ({need} bytes)",
            disk.name, disk.size_bytes
        ));
    }
    Ok(target_of(disk))
}

fn describe(disks: &[&DiskFacts]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| format!("{} ({} MiB)", d.name, d.size_bytes >> 20))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_image(cx: &PlanContext) -> Result<Planned, String> {
    let r = cx.request;
    let image = r.image.as_deref().ok_or("the request names no image")?;
    let (Some(raw_size), Some(sha256)) = (r.image_raw_size, r.image_sha256.clone()) else {
        return Err(format!(
            "image {image}: size and checksum were not resolved from the catalog"
        ));
    };
    let target = image_target(cx)?;
    let device_reads_zeros = fully_erased(cx.workflow).contains(&target.path);
    Ok(Planned::Run(Action::WriteImage(WriteImageAction {
        image: image.to_string(),
        manifest_url: format!("{}/images/{image}/manifest.json", cx.base_url),
        data_url: format!("{}/images/{image}/disk.zst", cx.base_url),
        raw_size,
        sha256,
        manifest_sha256: r.image_manifest_sha256.clone(),
        target,
        device_reads_zeros,
    })))
}

fn configure(cx: &PlanContext) -> Result<Planned, String> {
    let r = cx.request;
    let family = r.target_family()?;
    let cloud_init = r.cloud_init == Some(true);
    let mut files = Vec::new();
    let mut remove = Vec::new();
    if let (Some(net), Some(family)) = (&r.network, family) {
        for f in render_target_network(family, net).map_err(|e| format!("network: {e}"))? {
            files.push(FileSpec {
                path: f.path,
                content: f.content,
                mode: f.mode,
            });
        }
        remove.extend(target_cleanup_paths(family).into_iter().map(str::to_string));
    }
    if !r.ssh_authorized_keys.is_empty() && !cloud_init {
        files.push(FileSpec {
            path: "/root/.ssh/authorized_keys".into(),
            content: r.ssh_authorized_keys.join("\n") + "\n",
            mode: 0o600,
        });
    }
    let seed = if cloud_init {
        let net = r
            .network
            .clone()
            .unwrap_or_else(|| rackboot_install::NetworkVars {
                hostname: String::new(),
                domain: None,
                nics: Vec::new(),
                bonds: Vec::new(),
                vlans: Vec::new(),
            });
        if net.hostname.is_empty() {
            return Err("cloud_init: the seed needs network.hostname".into());
        }
        let seed_files = render_nocloud_seed(
            &net,
            &SeedInput {
                instance_id: cx.workflow.id.to_string(),
                ssh_authorized_keys: r.ssh_authorized_keys.clone(),
                phone_home_url: cx.booted_url.map(str::to_string),
            },
        )
        .map_err(|e| format!("cloud-init seed: {e}"))?;
        Some(SeedSpec {
            label: "cidata".into(),
            size_mib: SEED_MIB,
            files: seed_files,
        })
    } else {
        None
    };
    if files.is_empty() && seed.is_none() {
        return Ok(Planned::Skip(
            "nothing to configure (no network, keys or cloud-init seed asked for)".into(),
        ));
    }
    Ok(Planned::Run(Action::Configure(ConfigureAction {
        target: image_target(cx)?,
        root: RootSelector::Auto,
        remove,
        files,
        seed,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use rackboot_agent_proto::{ErasedDisk, RaidBuilt, RaidLevel};
    use rackboot_core::{Lifecycle, ProvisionState, WorkflowState};
    use serde_json::json;

    use crate::library::EraseWith;
    use crate::request::RaidRequest;

    fn disk(name: &str, mib: u64, removable: bool) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            path: format!("/dev/{name}"),
            size_bytes: mib << 20,
            serial: Some(format!("S-{name}")),
            removable,
            ..Default::default()
        }
    }

    fn facts() -> Facts {
        Facts {
            disks: vec![
                disk("vdb", 2048, false),
                disk("vda", 1024, false),
                disk("sr0", 4096, true),
                disk("vdc", 32, false),
            ],
            ..Default::default()
        }
    }

    fn workflow() -> Workflow {
        let def = crate::builtin::get("deploy").unwrap();
        crate::instantiate(
            def,
            uuid::Uuid::nil(),
            ProvisionState::Available,
            json!({}),
            "test",
            None,
        )
    }

    fn request() -> WorkflowRequest {
        serde_json::from_value(json!({
            "image": "testos", "image_raw_size": 100u64 << 20, "image_sha256": "ab".repeat(32),
            "target_family": "debian",
            "network": {"hostname": "node1", "nics": [{"mac": "52:54:00:00:00:01", "name": "eth0",
                "ipv4": {"mode": "static", "address": "10.77.0.50", "prefix": 24}}]},
        }))
        .unwrap()
    }

    fn plan(
        kind: StepKind,
        wf: &Workflow,
        r: &WorkflowRequest,
        f: &Facts,
    ) -> Result<Planned, String> {
        let cx = PlanContext {
            workflow: wf,
            request: r,
            facts: Some(f),
            base_url: "http://10.77.0.1:8080",
            booted_url: Some("http://10.77.0.1:8080/deploy/x/booted/t"),
        };
        let params = kind.parse_with(&serde_json::Value::Null).unwrap();
        agent_action(kind, &params, &cx)
    }

    #[test]
    fn erase_takes_fixed_disks_smallest_first_and_honours_the_policy() {
        let (wf, f) = (workflow(), facts());
        let Planned::Run(Action::Erase(e)) = plan(StepKind::Erase, &wf, &request(), &f).unwrap()
        else {
            panic!()
        };
        let paths: Vec<&str> = e.disks.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/dev/vda", "/dev/vdb"],
            "no removable, no tiny disks"
        );
        assert_eq!(e.disks[0].serial.as_deref(), Some("S-vda"));
        let r = WorkflowRequest {
            erase: crate::ErasePolicy::None,
            ..request()
        };
        assert!(matches!(
            plan(StepKind::Erase, &wf, &r, &f).unwrap(),
            Planned::Skip(_)
        ));
        let cx = PlanContext {
            workflow: &wf,
            request: &r,
            facts: Some(&f),
            base_url: "",
            booted_url: None,
        };
        let full = StepParams::Erase(EraseWith {
            mode: Some(crate::ErasePolicy::Full),
        });
        assert!(matches!(
            agent_action(StepKind::Erase, &full, &cx).unwrap(),
            Planned::Run(Action::Erase(EraseAction {
                mode: rackboot_agent_proto::EraseMode::Full,
                ..
            }))
        ));
    }

    #[test]
    fn the_image_goes_to_the_smallest_disk_that_holds_it_or_the_array() {
        let (mut wf, f) = (workflow(), facts());
        let r = request();
        let Planned::Run(Action::WriteImage(w)) = plan(StepKind::WriteImage, &wf, &r, &f).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.target.path, "/dev/vda");
        assert_eq!(w.data_url, "http://10.77.0.1:8080/images/testos/disk.zst");
        assert!(!w.device_reads_zeros);
        let big = WorkflowRequest {
            image_raw_size: Some(1500 << 20),
            ..r.clone()
        };
        let Planned::Run(Action::WriteImage(w)) =
            plan(StepKind::WriteImage, &wf, &big, &f).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.target.path, "/dev/vdb");
        let huge = WorkflowRequest {
            image_raw_size: Some(9000 << 20),
            ..r.clone()
        };
        let e = plan(StepKind::WriteImage, &wf, &huge, &f).unwrap_err();
        assert!(
            e.contains("no disk holds the image") && e.contains("vdb (2048 MiB)"),
            "{e}"
        );

        // After a full erase of vda, zeros need not be written.
        let erase = wf.step_mut("erase").unwrap();
        erase.state = StepState::Succeeded;
        erase.output = serde_json::to_value(StepOutput::Erased {
            disks: vec![ErasedDisk {
                path: "/dev/vda".into(),
                method: "overwrite".into(),
                bytes: 1,
                millis: 1,
            }],
        })
        .unwrap();
        let Planned::Run(Action::WriteImage(w)) = plan(StepKind::WriteImage, &wf, &r, &f).unwrap()
        else {
            panic!()
        };
        assert!(w.device_reads_zeros);

        // With an array, the image goes on it.
        let raid = wf.step_mut("build-raid").unwrap();
        raid.state = StepState::Succeeded;
        raid.output = serde_json::to_value(StepOutput::RaidBuilt(RaidBuilt {
            device: "/dev/md/rackboot0".into(),
            uuid: "u".into(),
            members: vec![],
            size_bytes: 1000 << 20,
        }))
        .unwrap();
        let Planned::Run(Action::WriteImage(w)) = plan(StepKind::WriteImage, &wf, &r, &f).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.target.path, "/dev/md/rackboot0");
    }

    #[test]
    fn raid_members_and_refusals() {
        let (wf, f) = (workflow(), facts());
        assert!(matches!(
            plan(StepKind::BuildRaid, &wf, &request(), &f).unwrap(),
            Planned::Skip(_)
        ));
        let r = WorkflowRequest {
            raid: Some(RaidRequest {
                level: RaidLevel::Raid1,
                disks: None,
                metadata: None,
            }),
            ..request()
        };
        let Planned::Run(Action::BuildRaid(a)) = plan(StepKind::BuildRaid, &wf, &r, &f).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.members.len(), 2);
        assert_eq!(a.metadata, "1.0");
        assert!(!a.assume_clean);
        let r5 = WorkflowRequest {
            raid: Some(RaidRequest {
                level: RaidLevel::Raid5,
                disks: None,
                metadata: None,
            }),
            ..request()
        };
        let e = plan(StepKind::BuildRaid, &wf, &r5, &f).unwrap_err();
        assert!(
            e.contains("needs at least 3") && e.contains("2 eligible"),
            "{e}"
        );
    }

    #[test]
    fn configure_writes_the_family_files_and_a_seed_with_the_callback() {
        let (wf, f) = (workflow(), facts());
        let Planned::Run(Action::Configure(c)) =
            plan(StepKind::Configure, &wf, &request(), &f).unwrap()
        else {
            panic!()
        };
        assert!(
            c.files
                .iter()
                .any(|f| f.path == "/etc/network/interfaces" && f.content.contains("10.77.0.50"))
        );
        assert!(
            c.files
                .iter()
                .any(|f| f.path == "/etc/hostname" && f.content == "node1\n")
        );
        assert!(c.seed.is_none());
        assert!(!c.remove.is_empty());
        let r = WorkflowRequest {
            cloud_init: Some(true),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG3 op@host".into()],
            ..request()
        };
        let Planned::Run(Action::Configure(c)) = plan(StepKind::Configure, &wf, &r, &f).unwrap()
        else {
            panic!()
        };
        let seed = c.seed.unwrap();
        let user_data = &seed.files.iter().find(|(n, _)| n == "user-data").unwrap().1;
        assert!(user_data.contains("/deploy/x/booted/t"), "{user_data}");
        assert!(
            !c.files
                .iter()
                .any(|f| f.path == "/root/.ssh/authorized_keys"),
            "cloud-init installs keys"
        );
        let bare = WorkflowRequest {
            network: None,
            ..request()
        };
        assert!(matches!(
            plan(StepKind::Configure, &wf, &bare, &f).unwrap(),
            Planned::Skip(_)
        ));
        let _ = Utc::now();
        let _ = (Lifecycle::Deploy, WorkflowState::Queued);
    }
}
