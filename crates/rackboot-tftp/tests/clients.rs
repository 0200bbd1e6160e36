//! Real TFTP clients (atftp, curl, busybox, tftp-hpa) against the server on loopback.

mod common;

use common::*;
use rackboot_core::EventKind;
use rackboot_wire::tftp::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_identical_bytes() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let mut server = start(|_, _| {}).await;
    let sizes: &[(&str, usize)] = &[
        ("empty", 0),
        ("s511", 511),
        ("s512", 512),
        ("s513", 513),
        ("s1024", 1024),
        ("s1468x3", 1468 * 3),
        ("s1468x16", 1468 * 16),
        ("random3m", 3 << 20),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        server.write(&format!("files/{name}"), &random_bytes(*size, i as u64 + 1));
    }
    let out_dir = tempfile::tempdir().unwrap();
    for client in ALL_CLIENTS {
        for (i, (name, size)) in sizes.iter().enumerate() {
            // curl 7.88 fails every empty download ("getpeername() failed with errno
            // 107"), against tftpd-hpa just the same: a curl bug, not ours.
            if client == Client::Curl && *size == 0 {
                continue;
            }
            let out = out_dir.path().join(format!("{client:?}-{name}"));
            let args = client_args(client, server.port, &format!("files/{name}"), &out);
            let (ok, stderr) = run_client(&args).await;
            assert!(ok, "{client:?} {name}: {stderr}");
            let got = std::fs::read(&out).unwrap();
            assert_eq!(got.len(), *size, "{client:?} {name}");
            assert!(
                got == random_bytes(*size, i as u64 + 1),
                "{client:?} {name} differs"
            );
            let e = server.next_event().await;
            assert_eq!(e.kind, EventKind::TftpSent, "{client:?} {name}: {e:?}");
            assert_eq!(e.data["bytes"], *size as u64);
            assert_eq!(e.data["client_ip"], "127.0.0.1");
        }
    }
    // The negotiated options show in the event of a windowed atftp transfer.
    let out = out_dir.path().join("again");
    let (ok, _) = run_client(&client_args(
        Client::AtftpWindowed,
        server.port,
        "files/random3m",
        &out,
    ))
    .await;
    assert!(ok);
    let e = server.next_event().await;
    assert_eq!(
        (e.data["blksize"].as_u64(), e.data["windowsize"].as_u64()),
        (Some(1468), Some(16))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netascii_with_tftp_hpa() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let server = start(|_, _| {}).await;
    let text = b"line one\nline two\r\nbare cr\r end\n".repeat(100);
    server.write("readme.txt", &text);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("readme.txt");
    let args: Vec<String> = [
        "tftp",
        "127.0.0.1",
        &server.port.to_string(),
        "-m",
        "ascii",
        "-c",
        "get",
        "readme.txt",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, stderr) = run_client(&args).await;
    assert!(ok, "{stderr}");
    // tftp-hpa decodes netascii back to Unix text.
    assert_eq!(std::fs::read(&out).unwrap(), text);

    // On the wire: the encoded bytes, and tsize is the encoded size.
    let raw = raw_get(
        server.port,
        "readme.txt",
        Mode::Netascii,
        &[("tsize", "0"), ("blksize", "100")],
    )
    .await;
    let encoded = rackboot_wire::tftp::netascii_decode(&raw.data);
    assert_eq!(encoded, text);
    let expected_len = rackboot_wire::tftp::netascii_encoded_len(&text);
    assert_eq!(raw.data.len() as u64, expected_len);
    assert!(
        raw.oack
            .unwrap()
            .contains(&("tsize".into(), expected_len.to_string()))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_get_errors_and_no_bytes() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let server = start(|_, _| {}).await;
    server.write("ok.txt", b"fine");
    std::fs::write(server.dir.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink("../secret", server.root.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc", server.root.join("etc-link")).unwrap();
    for (path, code) in [
        ("../etc/passwd", 2),
        ("/etc/passwd", 1),
        ("a/../../x", 2),
        ("..", 2),
        ("escape", 2),
        ("etc-link/passwd", 2),
        ("../secret", 2),
        ("/", 1),
        ("missing", 1),
    ] {
        let r = raw_get(server.port, path, Mode::Octet, &[("tsize", "0")]).await;
        assert_eq!(r.error.as_ref().map(|e| e.0), Some(code), "{path}: {r:?}");
        assert!(r.data.is_empty() && r.oack.is_none(), "{path}");
    }
    // A real client fails and writes nothing useful.
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("x");
    let (ok, _) = run_client(&client_args(Client::Curl, server.port, "escape", &out)).await;
    assert!(!ok);
    assert!(std::fs::read(&out).map(|d| d.is_empty()).unwrap_or(true));
    // Symlinks inside the root work.
    std::os::unix::fs::symlink("ok.txt", server.root.join("alias")).unwrap();
    let r = raw_get(server.port, "/alias", Mode::Octet, &[]).await;
    assert_eq!(r.data, b"fine");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_files_and_mounts() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let server = start(|config, dir| {
        std::fs::write(dir.join("undionly.kpxe"), b"loader").unwrap();
        std::fs::create_dir(dir.join("modules")).unwrap();
        std::fs::write(dir.join("modules/ldlinux.c32"), b"ld").unwrap();
        config
            .files
            .insert("undionly.kpxe".into(), dir.join("undionly.kpxe"));
        config.dirs.insert("syslinux".into(), dir.join("modules"));
    })
    .await;
    server.write("pxelinux.cfg/01-aa", b"from disk, must not be served");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("cfg");
    let (ok, stderr) = run_client(&client_args(
        Client::TftpHpa,
        server.port,
        "pxelinux.cfg/default",
        &out,
    ))
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"DEFAULT local\n# for 127.0.0.1\n"
    );
    let r = raw_get(server.port, "pxelinux.cfg/01-aa", Mode::Octet, &[]).await;
    assert_eq!(r.error.map(|e| e.0), Some(1));
    for (name, expected) in [
        ("undionly.kpxe", &b"loader"[..]),
        ("/syslinux/ldlinux.c32", b"ld"),
    ] {
        let r = raw_get(server.port, name, Mode::Octet, &[("tsize", "0")]).await;
        assert_eq!(r.data, expected, "{name}");
    }
    server.stop().await;
}

/// 40 MiB at 512-byte blocks is 81921 blocks: the block number wraps past 65535.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_number_rollover_with_atftp_and_curl() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let server = start(|_, _| {}).await;
    let path = server.root.join("big.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(40 << 20).unwrap();
    // A few non-zero bytes around the wrap point so misplaced blocks show.
    {
        use std::os::unix::fs::FileExt;
        for off in [0u64, 65535 * 512, 65536 * 512 + 7, (40 << 20) - 1] {
            f.write_at(&off.to_be_bytes()[4..], off.min((40 << 20) - 4))
                .unwrap();
        }
    }
    let expected = std::fs::read(&path).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    for args in [
        {
            let out = out_dir.path().join("atftp");
            vec![
                "atftp".into(),
                "-g".into(),
                "-r".into(),
                "big.img".into(),
                "-l".into(),
                out.to_str().unwrap().to_string(),
                "127.0.0.1".into(),
                server.port.to_string(),
            ]
        },
        {
            let out = out_dir.path().join("curl");
            vec![
                "curl".into(),
                "-sS".into(),
                "--fail".into(),
                "-o".into(),
                out.to_str().unwrap().to_string(),
                format!("tftp://127.0.0.1:{}/big.img", server.port),
            ]
        },
    ] {
        let (ok, stderr) = run_client(&args).await;
        assert!(ok, "{args:?}: {stderr}");
        let got = std::fs::read(
            args.iter()
                .find(|a| a.starts_with(out_dir.path().to_str().unwrap()))
                .unwrap(),
        )
        .unwrap();
        assert!(got == expected, "{} differs ({} bytes)", args[0], got.len());
    }
    server.stop().await;
}

/// The same server code on an IPv6 socket: curl fetches a file with blksize
/// over [::1], a generated file names the IPv6 client, and the event carries
/// the IPv6 address (UEFI PXE over IPv6 fetches its loader this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_serves_files_and_generated_content() {
    let mut server = start_on("[::1]:0", |_, _| {}).await;
    let data = random_bytes(300_000, 6);
    server.write("snponly.efi", &data);
    let out_dir = tempfile::tempdir().unwrap();
    for (file, expected) in [
        ("snponly.efi", data.clone()),
        (
            "pxelinux.cfg/default",
            b"DEFAULT local\n# for ::1\n".to_vec(),
        ),
    ] {
        let out = out_dir.path().join("out");
        let status = tokio::process::Command::new("curl")
            .args(["-sS", "--tftp-blksize", "1400", "-o"])
            .arg(&out)
            .arg(format!("tftp://[::1]:{}/{file}", server.port))
            .status()
            .await
            .expect("curl");
        assert!(status.success(), "curl {file}");
        assert_eq!(std::fs::read(&out).unwrap(), expected, "{file}");
    }
    let event = server.next_event().await;
    assert_eq!(event.data["client_ip"], "::1", "{event:?}");
    assert_eq!(event.data["server_ip"], "::1", "{event:?}");
    server.stop().await;
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// A FIFO, a socket or a device in a served tree (the root, a mounted
/// directory, a mapped file) is refused at once with an access violation
/// and an event: none is opened for reading (a FIFO's plain open waits for
/// a writer, which held a transfer task forever), and a regular file beside
/// them is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_sockets_and_devices_in_served_trees_are_refused_at_once() {
    if !rackboot_testenv::programs(&["atftp", "curl", "busybox", "tftp"]) {
        return;
    }
    let mut server = start(|config, dir| {
        let mount = dir.join("mount");
        std::fs::create_dir(&mount).unwrap();
        mkfifo(&mount.join("fifo"));
        config.dirs.insert("syslinux".into(), mount.clone());
        config
            .files
            .insert("mapped-fifo".into(), mount.join("fifo"));
        config.files.insert("null.bin".into(), "/dev/null".into());
    })
    .await;
    mkfifo(&server.root.join("fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(server.root.join("socket")).unwrap();
    server.write("kernel", &random_bytes(5000, 7));
    let out_dir = tempfile::tempdir().unwrap();
    for client in [Client::Curl, Client::TftpHpa] {
        for file in ["fifo", "syslinux/fifo", "mapped-fifo", "null.bin", "socket"] {
            let out = out_dir
                .path()
                .join(format!("{client:?}-{}", file.replace('/', "-")));
            let args = client_args(client, server.port, file, &out);
            // Refused in one round trip; a blocked open would leave the
            // client retrying until its own timeout.
            let (ok, stderr) =
                tokio::time::timeout(std::time::Duration::from_secs(30), run_client(&args))
                    .await
                    .unwrap_or_else(|_| panic!("{client:?} {file}: no answer within 30 s"));
            if client == Client::Curl {
                assert!(!ok, "{client:?} {file}: {stderr}");
            }
            assert!(
                std::fs::read(&out).map_or(true, |b| b.is_empty()),
                "{client:?} {file}: bytes were sent"
            );
            let e = server.next_event().await;
            assert_eq!(e.kind, EventKind::TftpFailed, "{client:?} {file}: {e:?}");
            assert_eq!(e.data["file"], file);
            assert!(
                e.data["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("not a regular file")),
                "{client:?} {file}: {e:?}"
            );
        }
        let out = out_dir.path().join(format!("{client:?}-kernel"));
        let (ok, stderr) = run_client(&client_args(client, server.port, "kernel", &out)).await;
        assert!(ok, "{client:?} kernel: {stderr}");
        assert_eq!(std::fs::read(&out).unwrap(), random_bytes(5000, 7));
        assert_eq!(server.next_event().await.kind, EventKind::TftpSent);
    }
    server.stop().await;
}
