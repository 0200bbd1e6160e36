//! Renders an install file from a JSON variables file, and prints how to boot
//! it: `cargo run -p rackboot-install --example render -- rhel 9.4
//! crates/rackboot-install/examples/vars.json [TEMPLATE]`. Windows reads the
//! Administrator password from RACKBOOT_WINDOWS_ADMIN_PASSWORD.

use rackboot_core::OsFamily;
use rackboot_install::{
    BootContext, Firmware, InstallVars, RenderSecrets, TemplateChoice, boot_entry, render,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [family, version, vars_path, rest @ ..] = args.as_slice() else {
        return Err("usage: render FAMILY VERSION VARS.json [TEMPLATE]".into());
    };
    let family = OsFamily::parse(family).ok_or("unknown family")?;
    let vars: InstallVars = serde_json::from_str(&std::fs::read_to_string(vars_path)?)?;
    let template = rest.first().map(std::fs::read_to_string).transpose()?;
    let choice = match &template {
        Some(source) => TemplateChoice::Override(source),
        None => TemplateChoice::Builtin,
    };
    let secrets = RenderSecrets {
        windows_admin_password: std::env::var("RACKBOOT_WINDOWS_ADMIN_PASSWORD").ok(),
        windows_share_password: std::env::var("RACKBOOT_WINDOWS_SHARE_PASSWORD").ok(),
    };
    let rendered = render(family, version, choice, &vars, &secrets)?;
    print!("{}", rendered.body);
    let base = "http://10.0.0.1:8080/install/MACHINE";
    let entry = boot_entry(
        family,
        version,
        &BootContext {
            tree_url: vars.install_source_url.clone(),
            kernel_url: format!("{}KERNEL", vars.install_source_url),
            initrd_urls: vec![format!("{}INITRD", vars.install_source_url)],
            automation_url: format!("{base}/{}", rendered.file_name),
            boot_mac: vars.nics.first().map(|n| n.mac),
            firmware: Firmware::Uefi,
            hostname: Some(vars.hostname.clone()),
            domain: vars.domain.clone(),
            wimboot_url: Some("http://10.0.0.1:8080/assets/wimboot".into()),
            network: vars.installer_network.clone(),
        },
    )?;
    eprintln!("# iPXE:");
    for line in entry.ipxe_commands() {
        eprintln!("#   {line}");
    }
    for c in &rendered.companions {
        eprintln!(
            "# also serve {base}/{} ({} bytes)",
            c.file_name,
            c.body.len()
        );
    }
    Ok(())
}
