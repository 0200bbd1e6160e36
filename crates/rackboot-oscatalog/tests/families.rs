//! Detection and import of media laid out like each family's real media:
//! the tree itself, and an ISO built from it with xorriso, must give the
//! same OsRelease and the same imported bytes.

mod common;

use std::path::{Path, PathBuf};

use common::{IsoNames, fake_wim, filler, snapshot, write_tree, xorriso};
use rackboot_core::OsFamily;
use rackboot_oscatalog::{
    DirTree, IsoImage, OsRelease, PackageRepository, RepositoryKind, SourceKind, detect, import,
    list,
};

struct Fixture {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    expected: OsRelease,
    /// The name sets of the ISO variant.
    iso_names: IsoNames,
}

#[allow(clippy::too_many_arguments)] // one positional row per expected release
fn release(
    id: &str,
    family: OsFamily,
    distro: &str,
    version: &str,
    arch: &str,
    name: &str,
    kernel: &str,
    initrd: &str,
) -> OsRelease {
    OsRelease {
        id: id.into(),
        family,
        distro: distro.into(),
        version: version.into(),
        arch: arch.into(),
        name: name.into(),
        kernel: kernel.into(),
        initrd: initrd.into(),
        extra_boot_files: Vec::new(),
        boot_config: None,
        bootloader_bios: None,
        bootloader_efi: None,
        source_kind: SourceKind::Tree,
        repository: None,
    }
}

const ROCKY_TREEINFO: &str = "\
[general]
; WARNING.0 = This section provides compatibility with pre-productmd treeinfos.
; WARNING.1 = Read productmd documentation for details about new format.
arch = x86_64
family = Rocky Linux
name = Rocky Linux 9.4
packagedir = AppStream/Packages
platforms = x86_64,xen
repository = AppStream
timestamp = 1714885433
variant = AppStream
variants = AppStream,BaseOS
version = 9.4

[header]
type = productmd.treeinfo
version = 1.2

[images-x86_64]
efiboot.img = images/efiboot.img
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[images-xen]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[media]
discnum = 1
totaldiscs = 1

[release]
name = Rocky Linux
short = Rocky
version = 9.4

[stage2]
mainimage = images/install.img

[tree]
arch = x86_64
build_timestamp = 1714885433
platforms = x86_64,xen
variants = AppStream,BaseOS

[variant-AppStream]
id = AppStream
name = AppStream
packages = AppStream/Packages
repository = AppStream
type = variant
uid = AppStream

[variant-BaseOS]
id = BaseOS
name = BaseOS
packages = BaseOS/Packages
repository = BaseOS
type = variant
uid = BaseOS
";

fn rocky() -> Fixture {
    Fixture {
        name: "rocky",
        files: vec![
            (".treeinfo", ROCKY_TREEINFO.into()),
            (".discinfo", b"1714885433.361373\nRocky Linux 9.4\nx86_64\n".to_vec()),
            ("media.repo", b"[InstallMedia]\nname=Rocky Linux 9.4\nmediaid=None\nmetadata_expire=-1\ngpgcheck=0\ncost=500\n".to_vec()),
            ("images/pxeboot/vmlinuz", filler(1, 70_000)),
            ("images/pxeboot/initrd.img", filler(2, 300_000)),
            ("images/install.img", filler(3, 5000)),
            ("images/efiboot.img", filler(4, 4096)),
            ("isolinux/isolinux.cfg", b"default vesamenu.c32\ntimeout 600\nlabel linux\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Rocky-9-4-x86_64-dvd quiet\n".to_vec()),
            ("BaseOS/repodata/repomd.xml", b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>1714885433</revision></repomd>\n".to_vec()),
            ("BaseOS/Packages/b/bash-5.1.8-9.el9.x86_64.rpm", filler(5, 9000)),
            ("AppStream/Packages/n/nginx-1.20.1-14.el9_2.1.x86_64.rpm", filler(6, 3000)),
        ],
        expected: OsRelease {
            // AppStream here has packages but no repodata of its own.
            repository: Some(PackageRepository {
                kind: RepositoryKind::Rpm,
                paths: vec!["BaseOS".into()],
                suite: None,
                components: vec![],
            }),
            ..release(
                "rocky-9.4-x86_64",
                OsFamily::Rhel,
                "rocky",
                "9.4",
                "x86_64",
                "Rocky Linux 9.4",
                "images/pxeboot/vmlinuz",
                "images/pxeboot/initrd.img",
            )
        },
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

fn alma_joliet_only() -> Fixture {
    // AlmaLinux 9 names itself "AlmaLinux 9" while [general] version says 9.1;
    // the ISO carries Joliet names only (no Rock Ridge).
    let treeinfo = ROCKY_TREEINFO
        .replace("family = Rocky Linux", "family = AlmaLinux")
        .replace("name = Rocky Linux 9.4", "name = AlmaLinux 9")
        .replace(
            "name = Rocky Linux\nshort = Rocky\nversion = 9.4",
            "name = AlmaLinux\nshort = AlmaLinux\nversion = 9.1",
        )
        .replace("version = 9.4", "version = 9.1");
    Fixture {
        name: "alma-joliet",
        files: vec![
            (".treeinfo", treeinfo.into_bytes()),
            ("images/pxeboot/vmlinuz", filler(11, 50_000)),
            ("images/pxeboot/initrd.img", filler(12, 80_000)),
            (
                "BaseOS/Packages/a/almalinux-release-9.1-1.9.el9.x86_64.rpm",
                filler(13, 2000),
            ),
        ],
        expected: release(
            "almalinux-9.1-x86_64",
            OsFamily::Rhel,
            "almalinux",
            "9.1",
            "x86_64",
            "AlmaLinux 9.1",
            "images/pxeboot/vmlinuz",
            "images/pxeboot/initrd.img",
        ),
        iso_names: IsoNames::JolietOnly,
    }
}

fn debian_iso_tree() -> Fixture {
    Fixture {
        name: "debian",
        files: vec![
            (".disk/info", b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27".to_vec()),
            (".disk/base_installable", Vec::new()),
            (".disk/cd_type", b"not_complete\n".to_vec()),
            ("install.amd/vmlinuz", filler(21, 80_000)),
            ("install.amd/initrd.gz", filler(22, 200_000)),
            ("install.amd/gtk/vmlinuz", filler(23, 1000)),
            ("install.amd/gtk/initrd.gz", filler(24, 1000)),
            ("dists/bookworm/Release", b"Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.5\nCodename: bookworm\n".to_vec()),
            ("isolinux/isolinux.cfg", b"path \ninclude menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n".to_vec()),
            ("md5sum.txt", b"0123456789abcdef0123456789abcdef  ./install.amd/vmlinuz\n".to_vec()),
        ],
        expected: release(
            "debian-12.5.0-amd64",
            OsFamily::Debian,
            "debian",
            "12.5.0",
            "amd64",
            "Debian GNU/Linux 12.5.0 Bookworm",
            "install.amd/vmlinuz",
            "install.amd/initrd.gz",
        ),
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

fn ubuntu() -> Fixture {
    Fixture {
        name: "ubuntu",
        files: vec![
            (".disk/info", b"Ubuntu-Server 24.04 LTS \"Noble Numbat\" - Release amd64 (20240423)".to_vec()),
            (".disk/casper-uuid-generic", b"5bd7a4b6-63a1-4b58-9c1b-8e7d83d7a0a1\n".to_vec()),
            ("casper/vmlinuz", filler(31, 90_000)),
            ("casper/initrd", filler(32, 250_000)),
            ("casper/ubuntu-server-minimal.squashfs", filler(33, 10_000)),
            ("boot/grub/grub.cfg", b"menuentry \"Try or Install Ubuntu Server\" {\n\tset gfxpayload=keep\n\tlinux\t/casper/vmlinuz  ---\n\tinitrd\t/casper/initrd\n}\n".to_vec()),
            ("dists/noble/Release", b"Origin: Ubuntu\nSuite: noble\nVersion: 24.04\n".to_vec()),
        ],
        expected: release(
            "ubuntu-24.04-amd64",
            OsFamily::Ubuntu,
            "ubuntu",
            "24.04",
            "amd64",
            "Ubuntu Server 24.04 LTS Noble Numbat",
            "casper/vmlinuz",
            "casper/initrd",
        ),
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

fn sles12() -> Fixture {
    Fixture {
        name: "sles12",
        files: vec![
            ("media.1/products", b"/ SLES12-SP5 12.5-0\n".to_vec()),
            ("media.1/media", b"SUSE - SLES-12-SP5-Server-DVD-x86_64-GM-DVD1\n20191104-115637\n1\n".to_vec()),
            ("content", b"CONTENTSTYLE  11\nDATADIR       suse\nDESCRDIR      suse/setup/descr\nDISTRIBUTION  SUSE_SLE\nLABEL         SUSE Linux Enterprise Server 12 SP5\nNAME          SLES\nREPOID        obsproduct://build.suse.de/SUSE:SLE-12-SP5:GA/SLES/12.5/DVD/x86_64\nVENDOR        SUSE\nVERSION       12.5\nBASEARCHS     x86_64\n".to_vec()),
            ("boot/x86_64/loader/linux", filler(41, 60_000)),
            ("boot/x86_64/loader/initrd", filler(42, 150_000)),
            ("boot/x86_64/loader/isolinux.cfg", b"default harddisk\nlabel linux\n  kernel linux\n  append initrd=initrd splash=silent showopts\n".to_vec()),
            ("suse/x86_64/zypper-1.13.54-18.40.2.x86_64.rpm", filler(43, 4000)),
        ],
        expected: release(
            "sles-12.5-x86_64",
            OsFamily::Suse,
            "sles",
            "12.5",
            "x86_64",
            "SUSE Linux Enterprise Server 12 SP5",
            "boot/x86_64/loader/linux",
            "boot/x86_64/loader/initrd",
        ),
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

fn leap15() -> Fixture {
    Fixture {
        name: "leap15",
        files: vec![
            (".treeinfo", b"[release]\nname = openSUSE Leap\nversion = 15.6\n\n[general]\narch = x86_64\nfamily = openSUSE Leap\nname = openSUSE Leap 15.6\nversion = 15.6\nplatforms = x86_64,xen\n\n[images-x86_64]\nkernel = boot/x86_64/loader/linux\ninitrd = boot/x86_64/loader/initrd\n".to_vec()),
            ("media.1/products", b"/ openSUSE-Leap 15.6-1\n".to_vec()),
            ("media.1/media", b"openSUSE - openSUSE-Leap-15.6-NET-x86_64-Build710.3-Media\nopenSUSE-Leap-15.6-NET-x86_64-Build710.3\n1\n".to_vec()),
            ("boot/x86_64/loader/linux", filler(51, 60_000)),
            ("boot/x86_64/loader/initrd", filler(52, 120_000)),
        ],
        expected: release(
            "opensuse-leap-15.6-x86_64",
            OsFamily::Suse,
            "opensuse-leap",
            "15.6",
            "x86_64",
            "openSUSE Leap 15.6",
            "boot/x86_64/loader/linux",
            "boot/x86_64/loader/initrd",
        ),
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

const ESXI_MODULES: &[&str] = &[
    "jumpstrt.gz",
    "useropts.gz",
    "features.gz",
    "k.b00",
    "uc_intel.b00",
    "uc_amd.b00",
    "procfs.b00",
    "vmx.v00",
    "vim.v00",
    "sb.v00",
    "s.v00",
    "imgdb.tgz",
    "imgpayld.tgz",
];

fn esxi_boot_cfg() -> String {
    let modules: Vec<String> = ESXI_MODULES.iter().map(|m| format!("/{m}")).collect();
    format!(
        "bootstate=0\ntitle=Loading ESXi installer\ntimeout=5\nprefix=\nkernel=/b.b00\n\
         kernelopt=runweasel cdromBoot\nmodules={}\nbuild=8.0.3-0.35.24280767\nupdated=0\n",
        modules.join(" --- ")
    )
}

fn esxi() -> Fixture {
    let cfg = esxi_boot_cfg();
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![
        ("boot.cfg", cfg.clone().into_bytes()),
        ("efi/boot/boot.cfg", cfg.into_bytes()),
        ("efi/boot/bootx64.efi", filler(61, 3000)),
        ("mboot.c32", filler(62, 2000)),
        ("isolinux.cfg", b"DEFAULT menu.c32\nMENU TITLE ESXi-8.0U3-24280767-STANDARD Boot Menu\nNOHALT 1\nPROMPT 0\nTIMEOUT 80\nLABEL install\n  KERNEL mboot.c32\n  APPEND -c boot.cfg\n".to_vec()),
        ("b.b00", filler(63, 40_000)),
    ];
    for (i, module) in ESXI_MODULES.iter().enumerate() {
        files.push((module, filler(100 + i as u32, 1000 + i * 100)));
    }
    let mut expected = release(
        "esxi-8.0.3-x86_64",
        OsFamily::Esxi,
        "esxi",
        "8.0.3",
        "x86_64",
        "VMware ESXi 8.0.3 build 24280767",
        "b.b00",
        "jumpstrt.gz",
    );
    expected.extra_boot_files = ESXI_MODULES[1..].iter().map(PathBuf::from).collect();
    expected.boot_config = Some("boot.cfg".into());
    expected.bootloader_bios = Some("mboot.c32".into());
    expected.bootloader_efi = Some("efi/boot/bootx64.efi".into());
    Fixture {
        name: "esxi",
        files,
        expected,
        // ESXi ISOs carry plain ISO 9660 names (upper case 8.3), no Rock Ridge
        // or Joliet; the reader lower-cases them as Linux's mount does.
        iso_names: IsoNames::Plain,
    }
}

const INSTALL_WIM_XML: &str = "<WIM><TOTALBYTES>4953751410</TOTALBYTES>\
<IMAGE INDEX=\"1\"><DIRCOUNT>19775</DIRCOUNT><FILECOUNT>85915</FILECOUNT>\
<TOTALBYTES>8733429133</TOTALBYTES><HARDLINKBYTES>4123712567</HARDLINKBYTES>\
<WINDOWS><ARCH>9</ARCH><PRODUCTNAME>Microsoft\u{ae} Windows\u{ae} Operating System</PRODUCTNAME>\
<EDITIONID>ServerStandard</EDITIONID><INSTALLATIONTYPE>Server Core</INSTALLATIONTYPE>\
<PRODUCTTYPE>ServerNT</PRODUCTTYPE><PRODUCTSUITE>Terminal Server</PRODUCTSUITE>\
<LANGUAGES><LANGUAGE>en-US</LANGUAGE><DEFAULT>en-US</DEFAULT></LANGUAGES>\
<VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>20348</BUILD><SPBUILD>587</SPBUILD><SPLEVEL>0</SPLEVEL></VERSION>\
<SYSTEMROOT>WINDOWS</SYSTEMROOT></WINDOWS>\
<NAME>Windows Server 2022 SERVERSTANDARDCORE</NAME>\
<DESCRIPTION>Windows Server 2022 SERVERSTANDARDCORE</DESCRIPTION>\
<FLAGS>ServerStandardCore</FLAGS><DISPLAYNAME>Windows Server 2022 Standard</DISPLAYNAME>\
<DISPLAYDESCRIPTION>This option (recommended) reduces management and servicing by installing only what is needed to run most server roles and applications.</DISPLAYDESCRIPTION>\
</IMAGE></WIM>";

const BOOT_WIM_XML: &str = "<WIM><TOTALBYTES>596543213</TOTALBYTES>\
<IMAGE INDEX=\"1\"><WINDOWS><ARCH>9</ARCH><PRODUCTNAME>Microsoft\u{ae} Windows\u{ae} Operating System</PRODUCTNAME>\
<EDITIONID>WindowsPE</EDITIONID><INSTALLATIONTYPE>WindowsPE</INSTALLATIONTYPE><PRODUCTTYPE>WinNT</PRODUCTTYPE>\
<VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>20348</BUILD><SPBUILD>587</SPBUILD></VERSION></WINDOWS>\
<NAME>Microsoft Windows PE (amd64)</NAME><DESCRIPTION>Microsoft Windows PE (amd64)</DESCRIPTION></IMAGE>\
<IMAGE INDEX=\"2\"><NAME>Microsoft Windows Setup (amd64)</NAME></IMAGE></WIM>";

fn windows_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("bootmgr", filler(71, 5000)),
        ("bootmgr.efi", filler(72, 5000)),
        ("boot/bcd", filler(73, 2000)),
        ("boot/boot.sdi", filler(74, 3000)),
        ("efi/boot/bootx64.efi", filler(75, 4000)),
        ("efi/microsoft/boot/bcd", filler(76, 2000)),
        ("sources/boot.wim", fake_wim(BOOT_WIM_XML)),
        ("sources/install.wim", fake_wim(INSTALL_WIM_XML)),
        ("sources/idwbinfo.txt", b"[BUILDINFO]\r\nBuildArch=amd64\r\nBuildBranch=fe_release_svc_prod1\r\nBuildType=fre\r\nBuildDate=May 5, 2022\r\n".to_vec()),
        ("setup.exe", filler(77, 1000)),
    ]
}

fn windows_expected() -> OsRelease {
    let mut expected = release(
        "windows-server-10.0.20348-amd64",
        OsFamily::Windows,
        "windows-server",
        "10.0.20348",
        "amd64",
        "Windows Server 2022 Standard",
        "bootmgr",
        "sources/boot.wim",
    );
    expected.extra_boot_files = vec!["boot/bcd".into(), "boot/boot.sdi".into()];
    expected.boot_config = Some("boot/bcd".into());
    expected.bootloader_bios = Some("bootmgr".into());
    expected.bootloader_efi = Some("efi/boot/bootx64.efi".into());
    expected
}

fn windows() -> Fixture {
    Fixture {
        name: "windows",
        files: windows_files(),
        expected: windows_expected(),
        iso_names: IsoNames::RockRidgeJoliet,
    }
}

fn build(dir: &Path, fixture: &Fixture) -> PathBuf {
    let tree = dir.join(fixture.name);
    let files: Vec<(&str, &[u8])> = fixture
        .files
        .iter()
        .map(|(p, c)| (*p, c.as_slice()))
        .collect();
    write_tree(&tree, &files);
    tree
}

fn check_family(fixture: Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let tree = build(dir.path(), &fixture);

    let found = detect(&DirTree::new(&tree).unwrap()).unwrap();
    assert_eq!(found, fixture.expected, "{}: tree detection", fixture.name);

    let iso = dir.path().join(format!("{}.iso", fixture.name));
    xorriso(&tree, &iso, fixture.iso_names);
    let from_iso = detect(&IsoImage::open(&iso).unwrap()).unwrap();
    let expected_iso = OsRelease {
        source_kind: SourceKind::Iso,
        ..fixture.expected.clone()
    };
    assert_eq!(from_iso, expected_iso, "{}: ISO detection", fixture.name);

    let tree_catalog = dir.path().join("catalog-tree");
    let iso_catalog = dir.path().join("catalog-iso");
    let imported = import(&tree, &tree_catalog, &|_| {}).unwrap();
    assert_eq!(imported, fixture.expected);
    let imported_iso = import(&iso, &iso_catalog, &|_| {}).unwrap();
    assert_eq!(imported_iso, expected_iso);

    let source = snapshot(&tree);
    let from_tree = snapshot(&tree_catalog.join(&imported.id));
    let from_iso = snapshot(&iso_catalog.join(&imported.id));
    assert_eq!(
        from_tree, source,
        "{}: tree copy differs from the source",
        fixture.name
    );
    assert_eq!(
        from_iso, source,
        "{}: ISO extraction differs from the source tree",
        fixture.name
    );

    let listed = list(&iso_catalog).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].release, expected_iso);
    assert_eq!(listed[0].files as usize, fixture.files.len());
    assert_eq!(
        listed[0].bytes,
        fixture
            .files
            .iter()
            .map(|(_, c)| c.len() as u64)
            .sum::<u64>()
    );
}

#[test]
fn rocky_treeinfo() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(rocky());
}

#[test]
fn alma_treeinfo_on_a_joliet_only_iso() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(alma_joliet_only());
}

#[test]
fn debian_iso_disk_info() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(debian_iso_tree());
}

#[test]
fn ubuntu_live_server_disk_info() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(ubuntu());
}

#[test]
fn sles12_products_and_content() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(sles12());
}

#[test]
fn opensuse_leap_treeinfo() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(leap15());
}

#[test]
fn esxi_boot_cfg_on_a_plain_iso9660_image() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(esxi());
}

#[test]
fn windows_wim_metadata() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    check_family(windows());
}

#[test]
fn windows_without_wim_metadata_uses_idwbinfo() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = windows_files();
    for (path, contents) in files.iter_mut() {
        if path.ends_with(".wim") {
            *contents = filler(9, 4096);
        }
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    write_tree(dir.path(), &files);
    let found = detect(&DirTree::new(dir.path()).unwrap()).unwrap();
    assert_eq!(found.id, "windows-fe_release_svc_prod1-amd64");
    assert_eq!(found.version, "fe_release_svc_prod1");
    assert_eq!(found.name, "Windows (build branch fe_release_svc_prod1)");
    assert_eq!(found.family, OsFamily::Windows);
}

#[test]
fn windows_upper_case_tree_is_found_case_insensitively() {
    // Media copied from a FAT stick or with Windows tools keep upper case.
    let dir = tempfile::tempdir().unwrap();
    let files = windows_files();
    let upper: Vec<(String, &[u8])> = files
        .iter()
        .map(|(p, c)| {
            let p = match p.strip_prefix("boot/") {
                Some(rest) => format!("Boot/{}", rest.replace("bcd", "BCD")),
                None => p.replace("sources/", "Sources/"),
            };
            (p, c.as_slice())
        })
        .collect();
    let upper_ref: Vec<(&str, &[u8])> = upper.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    write_tree(dir.path(), &upper_ref);
    let found = detect(&DirTree::new(dir.path()).unwrap()).unwrap();
    assert_eq!(found.initrd, PathBuf::from("Sources/boot.wim"));
    assert_eq!(
        found.extra_boot_files,
        vec![PathBuf::from("Boot/BCD"), PathBuf::from("Boot/boot.sdi")]
    );
}

#[test]
fn esxi_without_build_takes_the_version_from_upgrade_metadata() {
    // ESXi 6.x boot.cfg has no build= line; upgrade/metadata.xml names the version.
    let dir = tempfile::tempdir().unwrap();
    let cfg = "bootstate=0\ntitle=Loading ESXi installer\ntimeout=5\nkernel=/tboot.b00\n\
               kernelopt=runweasel\nmodules=/b.b00 --- /jumpstrt.gz --- /useropts.gz --- /k.b00\n";
    write_tree(
        dir.path(),
        &[
            ("boot.cfg", cfg.as_bytes()),
            ("tboot.b00", &filler(1, 100)),
            ("b.b00", &filler(2, 100)),
            ("jumpstrt.gz", &filler(3, 100)),
            ("useropts.gz", &filler(4, 100)),
            ("k.b00", &filler(5, 100)),
            ("mboot.c32", &filler(6, 100)),
            (
                "upgrade/metadata.xml",
                b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<vum>\n<product>\n<esxVersion>6.7.0</esxVersion>\n<esxRelease>8169922</esxRelease>\n</product>\n</vum>\n",
            ),
        ],
    );
    let found = detect(&DirTree::new(dir.path()).unwrap()).unwrap();
    assert_eq!(found.id, "esxi-6.7.0-x86_64");
    assert_eq!(found.kernel, PathBuf::from("tboot.b00"));
    assert_eq!(found.initrd, PathBuf::from("b.b00"));
    assert_eq!(
        found.extra_boot_files,
        ["jumpstrt.gz", "useropts.gz", "k.b00"].map(PathBuf::from)
    );
    assert_eq!(found.bootloader_efi, None);

    std::fs::remove_file(dir.path().join("upgrade/metadata.xml")).unwrap();
    let err = detect(&DirTree::new(dir.path()).unwrap()).unwrap_err();
    assert!(err.to_string().contains("no build="), "{err}");
    // A module that boot.cfg lists but the media lacks.
    std::fs::remove_file(dir.path().join("k.b00")).unwrap();
    let err = detect(&DirTree::new(dir.path()).unwrap()).unwrap_err();
    assert!(err.to_string().contains("names k.b00"), "{err}");
}

#[test]
fn an_unrelated_content_file_is_not_suse() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("content", b"just some file\n")]);
    let err = detect(&DirTree::new(dir.path()).unwrap()).unwrap_err();
    assert!(
        matches!(err, rackboot_oscatalog::DetectError::UnknownMedia { .. }),
        "{err}"
    );
}

#[test]
fn windows_iso_with_files_only_in_udf() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    // Microsoft's ISOs: the ISO 9660 tree holds only README.TXT, UDF has everything.
    let dir = tempfile::tempdir().unwrap();
    let mut fixture = windows();
    fixture.files.push(("README.TXT", b"This disc contains a \"UDF\" file system and requires an operating system\r\nthat supports the ISO-13346 \"UDF\" file system specification.\r\n".to_vec()));
    let tree = build(dir.path(), &fixture);
    let iso = dir.path().join("windows.iso");
    let hide = [
        "bootmgr",
        "bootmgr.efi",
        "boot",
        "efi",
        "sources",
        "setup.exe",
    ];
    common::genisoimage_udf(&tree, &iso, &hide);

    let image = IsoImage::open(&iso).unwrap();
    assert!(image.has_udf());
    let expected = OsRelease {
        source_kind: SourceKind::Iso,
        ..windows_expected()
    };
    assert_eq!(detect(&image).unwrap(), expected);
    let catalog = dir.path().join("catalog");
    assert_eq!(import(&iso, &catalog, &|_| {}).unwrap(), expected);
    assert_eq!(snapshot(&catalog.join(&expected.id)), snapshot(&tree));
}

#[test]
fn udf_side_of_a_bridge_image_matches_the_iso9660_side() {
    if !rackboot_testenv::programs(&["xorriso", "genisoimage"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = rocky();
    let tree = build(dir.path(), &fixture);
    let iso = dir.path().join("rocky-udf.iso");
    common::genisoimage_udf(&tree, &iso, &[]);
    let udf = IsoImage::open_udf(&iso).unwrap();
    let expected = OsRelease {
        source_kind: SourceKind::Iso,
        ..fixture.expected.clone()
    };
    assert_eq!(detect(&udf).unwrap(), expected);
    // Every file reads back with the tree's bytes through the UDF extents.
    for (path, contents) in &fixture.files {
        let mut data = Vec::new();
        std::io::Read::read_to_end(
            &mut rackboot_oscatalog::MediaFs::open(&udf, path).unwrap(),
            &mut data,
        )
        .unwrap();
        assert_eq!(&data, contents, "{path}");
    }
}

/// The head of bookworm's signed Release as this repository's mirror script
/// keeps it (the checksum lists shortened).
const BOOKWORM_RELEASE: &str = "\
Origin: Debian
Label: Debian
Suite: oldstable
Version: 12.15
Codename: bookworm
Changelogs: https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Date: Sat, 11 Jul 2026 10:16:37 UTC
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64 armel armhf i386 mips64el mipsel ppc64el s390x
Components: main contrib non-free-firmware non-free
Description: Debian 12.15 Released 11 July 2026
SHA256:
 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz
";

const NETBOOT: &str =
    "dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64";

fn debian_mirror_files(release: &str, installer: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "dists/bookworm/Release".to_string(),
            release.as_bytes().to_vec(),
        ),
        (
            "dists/bookworm/main/binary-amd64/Packages.xz".to_string(),
            filler(7, 3000),
        ),
        (
            "pool/main/b/bash/bash_5.2.15-2+b7_amd64.deb".to_string(),
            filler(8, 5000),
        ),
        (
            "pool/main/p/partman-base/partman-base_226_amd64.udeb".to_string(),
            filler(9, 2000),
        ),
    ];
    if installer {
        files.push((format!("{NETBOOT}/linux"), filler(10, 40_000)));
        files.push((format!("{NETBOOT}/initrd.gz"), filler(11, 90_000)));
    }
    files
}

fn write_owned(root: &Path, files: &[(String, Vec<u8>)]) {
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    write_tree(root, &files);
}

#[test]
fn debian_archive_with_its_netboot_installer_is_an_os_and_its_own_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("mirror");
    write_owned(&tree, &debian_mirror_files(BOOKWORM_RELEASE, true));
    // Debian's mirrors link suite names to codenames: not a second suite.
    std::os::unix::fs::symlink("bookworm", tree.join("dists/oldstable")).unwrap();
    let expected = OsRelease {
        id: "debian-12-amd64-mirror".into(),
        family: OsFamily::Debian,
        distro: "debian".into(),
        version: "12.15".into(),
        arch: "amd64".into(),
        name: "Debian 12.15 (bookworm) archive with its netboot installer".into(),
        kernel: format!("{NETBOOT}/linux").into(),
        initrd: format!("{NETBOOT}/initrd.gz").into(),
        extra_boot_files: vec![],
        boot_config: None,
        bootloader_bios: None,
        bootloader_efi: None,
        source_kind: SourceKind::Tree,
        repository: Some(PackageRepository {
            kind: RepositoryKind::Apt,
            paths: vec![PathBuf::new()],
            suite: Some("bookworm".into()),
            components: ["main", "contrib", "non-free-firmware", "non-free"]
                .map(String::from)
                .to_vec(),
        }),
    };
    assert_eq!(detect(&DirTree::new(&tree).unwrap()).unwrap(), expected);
    // Imported, it keeps what it is and every byte (the pool included).
    let catalog = dir.path().join("catalog");
    assert_eq!(import(&tree, &catalog, &|_| {}).unwrap(), expected);
    assert_eq!(
        std::fs::read(catalog.join(&expected.id).join("dists/bookworm/Release")).unwrap(),
        BOOKWORM_RELEASE.as_bytes()
    );
    let listed = list(&catalog).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].release, expected);
}

#[test]
fn an_inrelease_alone_is_read_through_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("mirror");
    let mut files = debian_mirror_files(BOOKWORM_RELEASE, true);
    files[0] = (
        "dists/bookworm/InRelease".into(),
        format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{BOOKWORM_RELEASE}-----BEGIN PGP SIGNATURE-----\n\niHUEARYIAB0WIQRNZP7BGcKQ\n-----END PGP SIGNATURE-----\n"
        )
        .into_bytes(),
    );
    write_owned(&tree, &files);
    let got = detect(&DirTree::new(&tree).unwrap()).unwrap();
    assert_eq!(got.id, "debian-12-amd64-mirror");
    assert_eq!(got.version, "12.15");
}

#[test]
fn an_archive_without_an_installer_or_of_another_origin_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("no-installer");
    write_owned(&tree, &debian_mirror_files(BOOKWORM_RELEASE, false));
    let err = detect(&DirTree::new(&tree).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dists/bookworm/Release")
            && err.contains("netboot installer")
            && err.contains("build-debian-mirror"),
        "{err}"
    );
    let tree = dir.path().join("other-origin");
    write_owned(
        &tree,
        &debian_mirror_files(
            &BOOKWORM_RELEASE.replace("Origin: Debian", "Origin: Elsewhere"),
            true,
        ),
    );
    let err = detect(&DirTree::new(&tree).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("netboot installer"), "{err}");
    // A bare RPM repository is not an OS to boot, and the error says why.
    let tree = dir.path().join("rpm-repo");
    write_tree(
        &tree,
        &[
            ("repodata/repomd.xml", b"<repomd/>".as_slice()),
            ("Packages/b/bash.rpm", b"x".as_slice()),
        ],
    );
    let err = detect(&DirTree::new(&tree).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("RPM repository without an installer"), "{err}");
}
