//! Prints a deployed image's network files for a family, or its NoCloud seed:
//! `cargo run -p rackboot-install --example netconfig -- debian
//! crates/rackboot-install/examples/network.json` (families: debian, ubuntu,
//! rhel, rhel-ifcfg, suse; `nocloud` for the seed).

use rackboot_install::{
    NetworkVars, SeedInput, TargetFamily, render_nocloud_seed, render_target_network,
    target_cleanup_paths,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [family, network_path] = args.as_slice() else {
        return Err("usage: netconfig FAMILY|nocloud NETWORK.json".into());
    };
    let net: NetworkVars = serde_json::from_str(&std::fs::read_to_string(network_path)?)?;
    if family == "nocloud" {
        let seed = SeedInput {
            instance_id: "example-deploy".into(),
            ssh_authorized_keys: vec![],
            phone_home_url: Some("http://10.0.0.1:8080/booted".into()),
        };
        for (name, content) in render_nocloud_seed(&net, &seed)? {
            println!("==> {name} <==\n{content}");
        }
        return Ok(());
    }
    let family = TargetFamily::parse(family).ok_or("unknown family")?;
    for path in target_cleanup_paths(family) {
        println!("remove {path}");
    }
    for file in render_target_network(family, &net)? {
        println!(
            "\n==> {} (mode {:o}) <==\n{}",
            file.path, file.mode, file.content
        );
    }
    Ok(())
}
