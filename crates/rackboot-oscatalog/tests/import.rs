//! Import behaviour on the real Debian netboot tree (package
//! debian-installer-12-netboot-amd64) and on ISOs built from it: symlinks,
//! progress, atomicity, the catalog, and hostile or broken images.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{
    IsoNames, Node, copy_tree, filler, netboot_tree, patch_once, resolved_snapshot, write_tree,
    xorriso,
};
use rackboot_core::OsFamily;
use rackboot_oscatalog::{
    DetectError, DirTree, ImportError, ImportPhase, ImportProgress, IsoImage, MediaError, MediaFs,
    SourceKind, delete, detect, import, list,
};

#[test]
fn real_debian_netboot_tree_is_recognised() {
    let tree = netboot_tree();
    let release = detect(&DirTree::new(&tree).unwrap()).unwrap();
    assert_eq!(release.id, "debian-12-amd64");
    assert_eq!(release.family, OsFamily::Debian);
    assert_eq!(release.distro, "debian");
    assert_eq!(release.version, "12");
    assert_eq!(release.arch, "amd64");
    assert!(
        release
            .name
            .starts_with("Debian 12 (bookworm) netboot installer 2023"),
        "{}",
        release.name
    );
    assert_eq!(
        release.kernel,
        PathBuf::from("debian-installer/amd64/linux")
    );
    assert_eq!(
        release.initrd,
        PathBuf::from("debian-installer/amd64/initrd.gz")
    );
    assert_eq!(release.source_kind, SourceKind::Tree);
}

/// A copy of the netboot tree with symlinks that must not be followed.
fn netboot_with_hostile_links(dir: &Path) -> PathBuf {
    let src = dir.join("netboot");
    copy_tree(&netboot_tree(), &src);
    fs::write(dir.join("outside-secret"), b"must not be imported").unwrap();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, src.join(name)).unwrap();
    link("/etc/passwd", "escape-absolute");
    link("../outside-secret", "escape-relative");
    link(
        "debian-installer/../../outside-secret",
        "escape-through-dir",
    );
    link("no-such-file", "dangling");
    link("loop-b", "loop-a");
    link("loop-a", "loop-b");
    // One that stays inside, spelled with `..`.
    link("debian-installer/amd64/../amd64/linux", "kernel-alias");
    src
}

const HOSTILE: &[&str] = &[
    "dangling",
    "escape-absolute",
    "escape-relative",
    "escape-through-dir",
    "loop-a",
    "loop-b",
];

#[test]
fn netboot_tree_and_its_iso_import_to_the_same_release_and_bytes() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = netboot_with_hostile_links(dir.path());
    let iso = dir.path().join("netboot.iso");
    xorriso(&src, &iso, IsoNames::RockRidgeJoliet);

    let events = Mutex::new(Vec::<ImportProgress>::new());
    let record = |p: ImportProgress| events.lock().unwrap().push(p);
    let catalog = dir.path().join("catalog");
    let from_tree = import(&src, &catalog, &record).unwrap();
    assert_eq!(from_tree.id, "debian-12-amd64");
    assert_eq!(from_tree.source_kind, SourceKind::Tree);

    let iso_catalog = dir.path().join("catalog-iso");
    let from_iso = import(&iso, &iso_catalog, &|_| {}).unwrap();
    assert_eq!(from_iso.source_kind, SourceKind::Iso);
    assert_eq!(
        from_iso,
        rackboot_oscatalog::OsRelease {
            source_kind: SourceKind::Iso,
            ..from_tree.clone()
        }
    );

    // Same bytes as the source, hostile links left out, the inside alias kept.
    let mut expected = resolved_snapshot_without(&src, HOSTILE);
    let tree_copy = resolved_snapshot(&catalog.join("debian-12-amd64"));
    let iso_copy = resolved_snapshot(&iso_catalog.join("debian-12-amd64"));
    assert_eq!(
        tree_copy.get("kernel-alias"),
        Some(&Node::Symlink("debian-installer/amd64/linux".into()))
    );
    assert_eq!(tree_copy.len(), expected.len());
    assert!(tree_copy == expected, "tree import differs from the source");
    assert!(
        iso_copy == expected,
        "ISO import differs from the source tree"
    );
    expected.clear();

    let entries = list(&catalog).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].skipped_symlinks, HOSTILE);
    assert_eq!(entries[0].path, catalog.join("debian-12-amd64"));
    let iso_entries = list(&iso_catalog).unwrap();
    assert_eq!(iso_entries[0].skipped_symlinks, HOSTILE);
    assert_eq!(iso_entries[0].files, entries[0].files);
    assert_eq!(iso_entries[0].bytes, entries[0].bytes);

    // Progress: monotonic, per file and within big files, ending complete.
    let events = events.into_inner().unwrap();
    assert_eq!(events.first().unwrap().phase, ImportPhase::Detecting);
    let done = events.last().unwrap();
    assert_eq!(done.phase, ImportPhase::Done);
    assert_eq!(done.bytes_done, done.bytes_total);
    assert_eq!(done.bytes_done, entries[0].bytes);
    assert_eq!(done.files_done, done.files_total);
    assert!(
        events
            .windows(2)
            .all(|w| w[0].bytes_done <= w[1].bytes_done)
    );
    let initrd_reports = events
        .iter()
        .filter(|e| e.current.as_deref() == Some(Path::new("debian-installer/amd64/initrd.gz")))
        .count();
    let initrd_len = fs::metadata(src.join("debian-installer/amd64/initrd.gz"))
        .unwrap()
        .len();
    assert!(
        initrd_reports as u64 > initrd_len / (2 * 1024 * 1024),
        "{initrd_reports} reports for a {initrd_len}-byte file"
    );
    // Nothing outside the catalog entry was written, no temp dirs remain.
    let names: Vec<String> = fs::read_dir(&catalog)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["debian-12-amd64"]);
}

fn resolved_snapshot_without(
    root: &Path,
    skip: &[&str],
) -> std::collections::BTreeMap<String, Node> {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("t");
    copy_tree(root, &copy);
    for name in skip {
        fs::remove_file(copy.join(name)).unwrap();
    }
    resolved_snapshot(&copy)
}

fn small_rhel_tree(root: &Path) {
    write_tree(
        root,
        &[
            (
                ".treeinfo",
                b"[general]\nfamily = Rocky Linux\nversion = 9.4\narch = x86_64\nname = Rocky Linux 9.4\n\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n\n[stage2]\nmainimage = images/install.img\n",
            ),
            ("images/pxeboot/vmlinuz", &filler(1, 10_000)),
            ("images/pxeboot/initrd.img", &filler(2, 20_000)),
            ("sub/aa", b"traversal target"),
        ],
    );
}

#[test]
fn catalog_refuses_a_second_import_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_rhel_tree(&tree);
    let catalog = dir.path().join("catalog");
    let first = import(&tree, &catalog, &|_| {}).unwrap();
    assert_eq!(first.id, "rocky-9.4-x86_64");
    match import(&tree, &catalog, &|_| {}) {
        Err(ImportError::AlreadyImported { id, path }) => {
            assert_eq!(id, "rocky-9.4-x86_64");
            assert_eq!(path, catalog.join("rocky-9.4-x86_64"));
        }
        other => panic!("expected AlreadyImported, got {other:?}"),
    }
    let meta: serde_json::Value = serde_json::from_slice(
        &fs::read(catalog.join("rocky-9.4-x86_64/.rackboot-os.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["release"]["family"], "rhel");
    assert_eq!(meta["release"]["kernel"], "images/pxeboot/vmlinuz");
    assert_eq!(meta["files"], 4);

    assert!(matches!(
        delete(&catalog, "../tree"),
        Err(ImportError::InvalidId(_))
    ));
    assert!(matches!(
        delete(&catalog, ".."),
        Err(ImportError::InvalidId(_))
    ));
    assert!(matches!(
        delete(&catalog, "debian-12-amd64"),
        Err(ImportError::NotFound { .. })
    ));
    delete(&catalog, "rocky-9.4-x86_64").unwrap();
    assert!(list(&catalog).unwrap().is_empty());
    assert!(
        fs::read_dir(&catalog).unwrap().next().is_none(),
        "delete left files behind"
    );
    assert!(
        tree.join("images/pxeboot/vmlinuz").exists(),
        "delete touched the source"
    );
    import(&tree, &catalog, &|_| {}).unwrap();
    assert_eq!(list(&catalog).unwrap().len(), 1);

    // A catalog inside the source would copy itself.
    let inner = tree.join("catalog");
    assert!(matches!(
        import(&tree, &inner, &|_| {}),
        Err(ImportError::CatalogInsideSource { .. })
    ));
}

#[test]
fn unknown_media_says_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("README.TXT", b"This disc contains a UDF file system")],
    );
    let err = detect(&DirTree::new(dir.path()).unwrap()).unwrap_err();
    let message = err.to_string();
    for needle in [
        ".treeinfo",
        ".disk/info",
        "version.info",
        "media.1/products",
        "boot.cfg",
        "sources/boot.wim",
    ] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }
    let catalog = dir.path().join("catalog");
    assert!(matches!(
        import(dir.path(), &catalog, &|_| {}),
        Err(ImportError::Detect(DetectError::UnknownMedia { .. }))
    ));
    assert!(!catalog.exists() || fs::read_dir(&catalog).unwrap().next().is_none());
}

#[test]
fn a_kernel_named_but_absent_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    small_rhel_tree(dir.path());
    fs::remove_file(dir.path().join("images/pxeboot/vmlinuz")).unwrap();
    match detect(&DirTree::new(dir.path()).unwrap()) {
        Err(DetectError::MissingBootFile { file, missing }) => {
            assert_eq!(file, ".treeinfo");
            assert_eq!(missing, "images/pxeboot/vmlinuz");
        }
        other => panic!("expected MissingBootFile, got {other:?}"),
    }
}

#[test]
fn path_traversal_names_in_an_iso_are_refused() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_rhel_tree(&tree);
    let catalog = dir.path().join("catalog");

    // Rock Ridge NM entry "aa" rewritten to "..".
    let rr = dir.path().join("rr.iso");
    xorriso(&tree, &rr, IsoNames::RockRidgeJoliet);
    patch_once(&rr, b"NM\x07\x01\x00aa", b"NM\x07\x01\x00..");
    match IsoImage::open(&rr) {
        Err(MediaError::UnsafeName { dir, name }) => {
            assert_eq!(dir, "sub");
            assert_eq!(name, "..");
        }
        other => panic!("expected UnsafeName, got {other:?}"),
    }
    assert!(matches!(
        import(&rr, &catalog, &|_| {}),
        Err(ImportError::Media(MediaError::UnsafeName { .. }))
    ));

    // A Rock Ridge name with a slash.
    let slash = dir.path().join("slash.iso");
    xorriso(&tree, &slash, IsoNames::RockRidgeJoliet);
    patch_once(&slash, b"NM\x07\x01\x00aa", b"NM\x07\x01\x00/a");
    assert!(matches!(
        IsoImage::open(&slash),
        Err(MediaError::UnsafeName { .. })
    ));

    // Joliet-only image: the UCS-2 name "aa" (length byte 4) rewritten to "..".
    let joliet = dir.path().join("joliet.iso");
    xorriso(&tree, &joliet, IsoNames::JolietOnly);
    patch_once(&joliet, b"\x04\0a\0a", b"\x04\0.\0.");
    assert!(matches!(
        IsoImage::open(&joliet),
        Err(MediaError::UnsafeName { .. })
    ));

    assert!(!catalog.exists() || fs::read_dir(&catalog).unwrap().next().is_none());
    assert!(!dir.path().join("aa").exists());
}

#[test]
fn truncated_and_garbage_isos_are_errors() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_rhel_tree(&tree);
    let iso = dir.path().join("good.iso");
    xorriso(&tree, &iso, IsoNames::RockRidgeJoliet);
    let good = fs::read(&iso).unwrap();
    let catalog = dir.path().join("catalog");

    // Cut inside the kernel's and the initrd's data, inside the directories,
    // inside the volume descriptors, and to nothing.
    let offset_of = |needle: &[u8]| {
        good.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let kernel_at = offset_of(&filler(1, 64));
    let initrd_at = offset_of(&filler(2, 64));
    for keep in [
        kernel_at + 100,
        initrd_at + 100,
        20 * 2048,
        16 * 2048 + 100,
        100,
        0,
    ] {
        let cut = dir.path().join(format!("cut-{keep}.iso"));
        fs::write(&cut, &good[..keep]).unwrap();
        let result = import(&cut, &catalog, &|_| {});
        assert!(
            result.is_err(),
            "import of an ISO cut to {keep} bytes succeeded"
        );
    }
    let not_iso = dir.path().join("random.iso");
    fs::write(&not_iso, filler(7, 1 << 20)).unwrap();
    assert!(matches!(
        IsoImage::open(&not_iso),
        Err(MediaError::NotIso(_))
    ));
    assert!(!catalog.exists() || fs::read_dir(&catalog).unwrap().next().is_none());
}

#[test]
fn mutated_isos_never_panic() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_rhel_tree(&tree);
    let rock_ridge = dir.path().join("rr.iso");
    xorriso(&tree, &rock_ridge, IsoNames::RockRidgeJoliet);
    // Files only in UDF (ISO 9660 side: README.TXT), so opening reads UDF.
    write_tree(&tree, &[("README.TXT", b"UDF only")]);
    let udf = dir.path().join("udf.iso");
    common::genisoimage_udf(&tree, &udf, &["images", "sub", ".treeinfo"]);
    assert!(IsoImage::open(&udf).unwrap().read_dir("images").is_ok());

    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (image, metadata_sectors) in [(&rock_ridge, 16..40), (&udf, 16..300)] {
        let good = fs::read(image).unwrap();
        // Mutate the metadata area (descriptors, directories, file entries).
        let start = metadata_sectors.start * 2048;
        let end = (metadata_sectors.end * 2048).min(good.len());
        let (mut opened, mut failed, mut udf_failed) = (0, 0, 0);
        for round in 0..300 {
            let mut data = good.clone();
            for _ in 0..1 + next() % 6 {
                let at = start + next() as usize % (end - start);
                data[at] = next() as u8;
            }
            let path = dir.path().join("mutated.iso");
            fs::write(&path, &data).unwrap();
            // The in-memory reader (the fuzzer's) agrees with the file reader.
            assert_eq!(
                IsoImage::from_bytes(data.clone())
                    .map(|i| i.read_dir("").map(|e| e.len()).ok())
                    .ok(),
                IsoImage::open(&path)
                    .map(|i| i.read_dir("").map(|e| e.len()).ok())
                    .ok(),
                "round {round}"
            );
            match IsoImage::open(&path) {
                Ok(image) => {
                    opened += 1;
                    let _ = detect(&image);
                    let catalog = dir.path().join(format!("catalog-{round}"));
                    if import(&path, &catalog, &|_| {}).is_ok() {
                        fs::remove_dir_all(&catalog).unwrap();
                    }
                }
                Err(_) => failed += 1,
            }
            if IsoImage::open_udf(&path).is_err() {
                udf_failed += 1;
            }
        }
        assert_eq!(opened + failed, 300);
        // A broken UDF tree falls back to the ISO 9660 tree: count UDF
        // failures through open_udf.
        let detected = if image == &udf { udf_failed } else { failed };
        assert!(
            detected > 0,
            "no mutation of {} was detected",
            image.display()
        );
    }
}

#[test]
fn deep_directories_and_long_names_survive_rock_ridge() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_rhel_tree(&tree);
    let deep = "d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11";
    let long_name = "x".repeat(240);
    write_tree(
        &tree,
        &[
            (&format!("{deep}/deep.txt"), b"nine levels down"),
            (&format!("long/{long_name}.rpm"), &filler(3, 5000)),
            ("Mixed Case/Über ñame.txt", b"utf-8 names"),
        ],
    );
    std::os::unix::fs::symlink(format!("../{deep}/deep.txt"), tree.join("long/deep-link")).unwrap();
    for names in [IsoNames::RockRidgeJoliet, IsoNames::RockRidgeRelocated] {
        let iso = dir.path().join(format!("deep-{names:?}.iso"));
        xorriso(&tree, &iso, names);
        let image = fs::read(&iso).unwrap();
        let has = |entry: &[u8]| image.windows(entry.len()).any(|w| w == entry);
        // The long name needs a continuation area; relocation shows as CL/RE.
        assert!(has(b"CE\x1c\x01"), "no CE entry in {names:?}");
        assert_eq!(has(b"CL\x0c\x01"), names == IsoNames::RockRidgeRelocated);
        let catalog = dir.path().join(format!("catalog-{names:?}"));
        let release = import(&iso, &catalog, &|_| {}).unwrap();
        assert_eq!(
            resolved_snapshot(&catalog.join(&release.id)),
            resolved_snapshot(&tree),
            "{names:?}"
        );
    }
}
