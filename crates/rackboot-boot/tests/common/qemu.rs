//! QEMU fixtures shared by the qemu_* tests.

use std::process::{Child, Command};

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host's stock kernel (Debian's linux-image-amd64).
pub fn kernel() -> std::path::PathBuf {
    rackboot_lab::host_kernel().expect("a kernel in /boot (linux-image-amd64)")
}

/// A newc cpio with busybox and an /init that prints RACKBOOT-INIT-OK and the
/// kernel command line, then powers off.
pub fn initrd(dir: &std::path::Path) -> Vec<u8> {
    let root = dir.join("initrd-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    std::fs::write(
        root.join("init"),
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         echo \"RACKBOOT-INIT-OK $(/bin/busybox cat /proc/cmdline)\"\n\
         /bin/busybox poweroff -f\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet")
        .current_dir(&root)
        .output()
        .expect("cpio");
    assert!(out.status.success(), "cpio failed");
    out.stdout
}
