//! PXE client classification (RFC 4578 options 93/94/97, vendor class 60, iPXE user class 77 / option 175).
//!
//! [`classify`] tells a network-booting client apart from an ordinary DHCP client and
//! says what it is: firmware architecture, UEFI HTTP boot or not, iPXE already running
//! or not (to break the chainload loop), SMBIOS UUID and UNDI version.

use dhcproto::v4::{DhcpOption, Message, OptionCode};
use rackboot_core::{Arch, PxeClient};

/// Vendor class (option 60) prefix of PXE firmware (PXE 2.1 spec).
pub const PXE_CLIENT_CLASS: &[u8] = b"PXEClient";
/// Vendor class prefix of UEFI HTTP boot clients (UEFI 2.5+).
pub const HTTP_CLIENT_CLASS: &[u8] = b"HTTPClient";
/// iPXE's option space (encapsulated options, e.g. feature flags and bus id).
pub const IPXE_ENCAP_OPTION: u8 = 175;
/// User class (option 77) iPXE sends.
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// Classifies a DHCP request. `None` for clients that are not network-booting
/// (no PXEClient/HTTPClient vendor class and no iPXE marker).
pub fn classify(msg: &Message) -> Option<PxeClient> {
    let opts = msg.opts();
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.as_slice()),
        _ => None,
    };
    let pxe_class = vendor_class.is_some_and(|v| v.starts_with(PXE_CLIENT_CLASS));
    let http_boot = vendor_class.is_some_and(|v| v.starts_with(HTTP_CLIENT_CLASS));
    let ipxe = is_ipxe(msg);
    if !pxe_class && !http_boot && !ipxe {
        return None;
    }

    let arch_code = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => vendor_class.and_then(arch_from_vendor_class),
    };
    let arch = arch_code.map(Arch::from_client_arch).unwrap_or(Arch::Bios);
    // HTTP-boot architecture types also mean HTTP boot even when the class is odd.
    let http_boot = http_boot || matches!(arch_code, Some(15 | 16 | 19));

    let undi = match opts.get(OptionCode::ClientNetworkInterface) {
        // Type 1 is UNDI, the only type defined.
        Some(DhcpOption::ClientNetworkInterface(1, major, minor)) => Some((*major, *minor)),
        _ => None,
    };
    let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(bytes)) => uuid_from_option97(bytes),
        _ => None,
    };

    Some(PxeClient {
        arch,
        http_boot,
        ipxe,
        uuid,
        undi,
    })
}

/// True when iPXE sent the request: user class "iPXE" or any iPXE-encapsulated option 175.
pub fn is_ipxe(msg: &Message) -> bool {
    let opts = msg.opts();
    if opts.contains(OptionCode::Unknown(IPXE_ENCAP_OPTION)) {
        return true;
    }
    match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(uc)) => user_class_has(uc, IPXE_USER_CLASS),
        _ => false,
    }
}

/// Option 77 is RFC 3004 (length-prefixed instances), but iPXE and others send the
/// bare string. Accept either.
fn user_class_has(raw: &[u8], want: &[u8]) -> bool {
    if raw == want {
        return true;
    }
    let mut rest = raw;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == want {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// `PXEClient:Arch:00007:UNDI:003016` → 7, for clients that omit option 93.
fn arch_from_vendor_class(class: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(class).ok()?;
    let pos = s.find(":Arch:")?;
    s.get(pos + 6..pos + 11)?.parse().ok()
}

/// Option 97: type 0 then the 16-byte SMBIOS UUID. SMBIOS (2.6+) stores the first
/// three fields little-endian, and PXE firmware (EDK2, iPXE) copies those bytes as
/// they are, so `12345678-9abc-...` arrives as `78 56 34 12 bc 9a ...`.
/// All-zero and all-ones UUIDs mean "not set" and give `None`.
pub fn uuid_from_option97(bytes: &[u8]) -> Option<uuid::Uuid> {
    let (&kind, rest) = bytes.split_first()?;
    if kind != 0 {
        return None;
    }
    let raw: [u8; 16] = rest.try_into().ok()?;
    if raw == [0; 16] || raw == [0xff; 16] {
        return None;
    }
    Some(uuid::Uuid::from_bytes_le(raw))
}

/// Option 97 bytes for `uuid` (inverse of [`uuid_from_option97`]); used by tests and tools.
pub fn option97_from_uuid(uuid: uuid::Uuid) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&uuid.to_bytes_le());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, UnknownOption};

    fn msg(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn plain_client_is_not_pxe() {
        assert_eq!(classify(&msg(vec![])), None);
        assert_eq!(
            classify(&msg(vec![DhcpOption::ClassIdentifier(
                b"MSFT 5.0".to_vec()
            )])),
            None
        );
    }

    #[test]
    fn table_of_synthetic_requests() {
        let uuid: uuid::Uuid = "12345678-9abc-def0-1122-334455667788".parse().unwrap();
        struct Case {
            name: &'static str,
            opts: Vec<DhcpOption>,
            want: PxeClient,
        }
        let base = PxeClient {
            arch: Arch::Bios,
            http_boot: false,
            ipxe: false,
            uuid: None,
            undi: None,
        };
        let cases = vec![
            Case {
                name: "class only, arch from class",
                opts: vec![DhcpOption::ClassIdentifier(
                    b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
                )],
                want: PxeClient {
                    arch: Arch::UefiX64,
                    ..base.clone()
                },
            },
            Case {
                name: "option 93 wins over class",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000".to_vec()),
                    DhcpOption::ClientSystemArchitecture(Architecture(11)),
                ],
                want: PxeClient {
                    arch: Arch::UefiArm64,
                    ..base.clone()
                },
            },
            Case {
                name: "http boot",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
                    DhcpOption::ClientSystemArchitecture(Architecture(16)),
                    DhcpOption::ClientNetworkInterface(1, 3, 1),
                    DhcpOption::ClientMachineIdentifier(option97_from_uuid(uuid)),
                ],
                want: PxeClient {
                    arch: Arch::UefiX64,
                    http_boot: true,
                    undi: Some((3, 1)),
                    uuid: Some(uuid),
                    ..base.clone()
                },
            },
            Case {
                name: "ipxe by user class without vendor class",
                opts: vec![DhcpOption::UserClass(b"iPXE".to_vec())],
                want: PxeClient {
                    ipxe: true,
                    ..base.clone()
                },
            },
            Case {
                name: "ipxe by RFC 3004 user class",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
                    DhcpOption::UserClass(b"\x03foo\x04iPXE".to_vec()),
                ],
                want: PxeClient {
                    ipxe: true,
                    ..base.clone()
                },
            },
            Case {
                name: "ipxe by option 175",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
                    DhcpOption::Unknown(UnknownOption::new(
                        OptionCode::Unknown(175),
                        vec![0x13, 1, 1],
                    )),
                ],
                want: PxeClient {
                    ipxe: true,
                    ..base.clone()
                },
            },
            Case {
                name: "zero uuid ignored",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
                    DhcpOption::ClientMachineIdentifier(vec![0; 17]),
                ],
                want: base.clone(),
            },
            Case {
                name: "short uuid ignored",
                opts: vec![
                    DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
                    DhcpOption::ClientMachineIdentifier(vec![0, 1, 2, 3]),
                ],
                want: base.clone(),
            },
        ];
        for c in cases {
            assert_eq!(classify(&msg(c.opts)), Some(c.want), "{}", c.name);
        }
    }

    #[test]
    fn uuid_round_trip_is_smbios_order() {
        let uuid: uuid::Uuid = "12345678-9abc-def0-1122-334455667788".parse().unwrap();
        let raw = option97_from_uuid(uuid);
        assert_eq!(
            raw[..9],
            [0, 0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde]
        );
        assert_eq!(uuid_from_option97(&raw), Some(uuid));
        assert_eq!(uuid_from_option97(&[1; 17]), None, "type must be 0");
    }
}
