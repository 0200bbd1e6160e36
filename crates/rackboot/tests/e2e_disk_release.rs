//! The Debian preseed's partman/early_command frees the chosen disk before
//! partman sees it (rackboot_install::context::disk_release_sh), checked
//! with the real kernel and tools: in a VM (the host's Debian kernel; the
//! build host's kernel has no md or device-mapper) two disks carry an
//! earlier life, an md RAID-1 over their first partitions holding an LVM
//! volume group with a mounted ext4 volume, and swap on the target disk's
//! second partition. The line runs under busybox's sh, as in the installer;
//! afterwards nothing on the target disk is in use and no signature is
//! left on it, while the other disk keeps its half of the mirror; on a
//! blank disk it succeeds and leaves it blank. Needs
//! root, qemu-system-x86, linux-image-amd64, mdadm, lvm2, busybox-static.

mod common;

use std::time::Duration;

use common::diskvm::{EXIT, run_disk_script};

const TIMEOUT: Duration = Duration::from_secs(300);

fn raw_disk(path: &std::path::Path, mib: u64) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
}

#[test]
fn the_early_command_frees_and_wipes_an_lvm_on_md_disk_in_use() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.raw"),
        dir.path().join("b.raw"),
        dir.path().join("c.raw"),
    );
    raw_disk(&a, 128);
    raw_disk(&b, 128);
    raw_disk(&c, 64);
    let release = rackboot_install::context::disk_release_sh();
    let script = format!(
        r#"set -e
for d in /dev/vda /dev/vdb; do
	printf 'label: gpt\n,64M,A19D880F-05FC-4D3B-A006-743F0F84911E\n,,\n' | sfdisk --quiet $d
done
mdadm --create /dev/md/old --run --level=1 --raid-devices=2 --metadata=1.2 /dev/vda1 /dev/vdb1
pvcreate -q /dev/md/old
vgcreate -q oldvg /dev/md/old
lvcreate -q -L 16M -n root oldvg
mkfs.ext4 -q /dev/oldvg/root
mkdir -p /mnt/old
mount /dev/oldvg/root /mnt/old
mkswap /dev/vda2 >/dev/null
swapon /dev/vda2
echo "layout: $(cat /proc/mdstat | grep '^md') / $(dmsetup ls | tr '\n' ' ') / $(grep -c vda2 /proc/swaps) swap"
set +e
# A blank disk stays blank, and the line succeeds on it.
disk=/dev/vdc
{release}
echo "blank: exit $? [$(wipefs --no-act --noheadings /dev/vdc)]"
# What partman/early_command runs once the disk is chosen.
disk=/dev/vda
{release}
echo "release: exit $?"
fail=
grep -q ' /mnt/old ' /proc/mounts && fail="$fail mounted"
grep -q vda2 /proc/swaps && fail="$fail swap"
dmsetup ls | grep -q oldvg && fail="$fail lvm-active"
grep -q '^md' /proc/mdstat && fail="$fail md-active"
blockdev --rereadpt /dev/vda 2>/dev/null
left=$(wipefs --no-act --noheadings /dev/vda; for p in /dev/vda1 /dev/vda2; do [ -b $p ] && wipefs --no-act --noheadings $p; done)
[ -n "$left" ] && fail="$fail signatures:$left"
mdadm --examine /dev/vdb1 >/dev/null 2>&1 || fail="$fail other-disk-lost-its-half"
echo "result:${{fail:- ok}}"
"#
    );
    let out = run_disk_script(dir.path(), &[&a, &b, &c], &script, TIMEOUT);
    println!("{out}");
    assert!(out.contains("blank: exit 0 []"), "{out}");
    assert!(
        out.contains("layout: md") && out.contains("oldvg-root") && out.contains(" 1 swap"),
        "the old layout was not built:\n{out}"
    );
    assert!(out.contains("release: exit 0"), "{out}");
    assert!(out.contains("result: ok"), "{out}");
    assert!(out.contains(&format!("{EXIT}0")), "{out}");
}
