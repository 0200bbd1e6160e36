//! The seed partition added to tables made by the real tools (sfdisk,
//! sgdisk), in regular files, checked by the same tools afterwards.

use std::process::{Command, Stdio};

use rackboot_agent::blockdev::Device;
use rackboot_agent::parttable::{self, GptNew};

const MIB: u64 = 1 << 20;

fn tool(program: &str, args: &[&str], input: Option<&str>) -> Option<String> {
    use std::io::Write;
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            eprintln!("SKIPPED: {program} is not installed");
            return None;
        }
    };
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn apply(path: &std::path::Path, writes: &[(u64, Vec<u8>)]) {
    let dev = Device::open(path).unwrap();
    for (offset, bytes) in writes {
        dev.write_at(bytes, *offset).unwrap();
    }
    dev.sync().unwrap();
}

#[test]
fn gpt_image_grown_onto_a_larger_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    // A 100 MiB "image" with two partitions, written onto a 300 MiB disk:
    // its backup GPT is 200 MiB before the disk's end.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100 * MIB).unwrap();
    let p = path.to_str().unwrap();
    if tool("sfdisk", &["-q", p], Some("label: gpt\n,10MiB\n,50MiB\n")).is_none() {
        return;
    }
    f.set_len(300 * MIB).unwrap();
    let dev = Device::open(&path).unwrap();
    let table = parttable::read_table(&dev, 512).unwrap();
    assert!(table.gpt);
    assert_eq!(table.partitions.len(), 2);
    let added = parttable::add_gpt_partition(
        &table.lba0,
        &table.lba1,
        &table.entries,
        512,
        dev.size() / 512,
        &GptNew {
            size: 32 * MIB / 512,
            type_guid: uuid::Uuid::parse_str(parttable::GPT_BASIC_DATA)
                .unwrap()
                .to_bytes_le(),
            unique_guid: uuid::Uuid::new_v4().to_bytes_le(),
            name: "cidata",
        },
    )
    .unwrap();
    drop(dev);
    apply(&path, &added.writes);
    assert_eq!(added.partition.number, 3);

    if let Some(verify) = tool("sgdisk", &["-v", p], None) {
        assert!(verify.contains("No problems found"), "{verify}");
    }
    let dump = tool("sfdisk", &["--dump", p], None).unwrap();
    assert!(
        dump.contains(&format!("last-lba: {}", 300 * MIB / 512 - 34)),
        "{dump}"
    );
    let line = dump
        .lines()
        .find(|l| l.contains("name=\"cidata\""))
        .unwrap_or_else(|| panic!("{dump}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // After the image's partitions (1 + 10 + 50 MiB), 32 MiB.
    assert_eq!(added.partition.start, 61 * MIB / 512);
    assert!(
        line.contains(&format!("start= {}, size= 65536,", 61 * MIB / 512)),
        "{line}"
    );
    assert!(
        line.contains("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        "{line}"
    );
    // Read back by the agent too.
    let table = parttable::read_table(&Device::open(&path).unwrap(), 512).unwrap();
    assert_eq!(table.partitions.len(), 3);
}

#[test]
fn mbr_partition_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(200 * MIB).unwrap();
    let p = path.to_str().unwrap();
    if tool(
        "sfdisk",
        &["-q", p],
        Some("label: dos\n,10MiB,L\n,40MiB,L\n"),
    )
    .is_none()
    {
        return;
    }
    let dev = Device::open(&path).unwrap();
    let table = parttable::read_table(&dev, 512).unwrap();
    assert!(!table.gpt);
    let added = parttable::add_mbr_partition(
        &table.lba0,
        dev.size() / 512,
        16 * MIB / 512,
        parttable::MBR_FAT32_LBA,
        512,
    )
    .unwrap();
    drop(dev);
    apply(&path, &added.writes);
    let dump = tool("sfdisk", &["--dump", p], None).unwrap();
    let line = dump
        .lines()
        .find(|l| l.contains("disk3"))
        .unwrap_or_else(|| panic!("{dump}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // 1 MiB + 10 MiB + 40 MiB = sector 104448, already MiB-aligned.
    assert!(
        line.contains("start= 104448, size= 32768, type=c"),
        "{line}"
    );
    tool("sfdisk", &["--verify", p], None).unwrap();
}
