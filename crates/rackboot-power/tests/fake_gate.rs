//! `fake://` BMCs are refused in a process that did not opt in (a server would
//! otherwise report verified power actions against nothing), and work once it has.

use rackboot_power::secrets::SecretKey;
use rackboot_power::{BmcTarget, PowerErrorKind, driver_for, seal_bmc};

#[test]
fn fake_bmc_urls_need_an_explicit_opt_in() {
    let key = SecretKey::generate();
    let err = seal_bmc("fake://n1", Some("admin"), Some("pw"), false, &key).unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Unsupported);
    assert!(err.to_string().contains("allow_fake_bmc"), "{err}");
    let target = BmcTarget::new("fake://n1".parse().unwrap());
    let err = driver_for(&target).err().expect("refused");
    assert_eq!(err.kind(), PowerErrorKind::Unsupported);

    // Real schemes are unaffected.
    seal_bmc("ipmi://admin:pw@10.0.0.5", None, None, false, &key).unwrap();

    rackboot_power::fake::enable();
    let bmc = seal_bmc("fake://n1", Some("admin"), Some("pw"), false, &key).unwrap();
    assert_eq!(bmc.address, "fake://n1");
    assert!(driver_for(&target).is_ok());
}
