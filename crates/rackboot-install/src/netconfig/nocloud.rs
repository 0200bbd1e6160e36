//! A cloud-init NoCloud seed (the files of a vfat partition labelled
//! `cidata`): `meta-data`, `user-data` and `network-config`.

use crate::RenderError;
use crate::vars::{NetworkVars, check_http_url, check_ssh_keys, invalid, is_simple_token, missing};

use super::Model;
use super::netplan::{DefaultRoute, body, q};

/// What the seed says besides the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedInput {
    /// cloud-init's `instance-id`: the deploy's id. cloud-init runs its
    /// once-per-instance modules (keys, hostname, phone home) again when it
    /// changes, so every deploy must give a new one. Letters, digits, and
    /// `._:-`, at most 128 bytes.
    pub instance_id: String,
    /// OpenSSH public keys for the image's default user and for root
    /// (`disable_root: false` makes cloud-init give root the same keys).
    pub ssh_authorized_keys: Vec<String>,
    /// Called once at first boot (cloud-init `phone_home`: a POST with the
    /// instance id and host name, 10 tries), so the server learns the
    /// deployed system came up.
    pub phone_home_url: Option<String>,
}

impl SeedInput {
    fn validate(&self) -> Result<(), RenderError> {
        if self.instance_id.is_empty() {
            return Err(missing("instance_id"));
        }
        if self.instance_id.len() > 128 || !is_simple_token(&self.instance_id, b"._:-") {
            return Err(invalid(
                "instance_id",
                "letters, digits and '.', '_', ':', '-', at most 128 bytes",
            ));
        }
        check_ssh_keys(&self.ssh_authorized_keys)?;
        if let Some(url) = &self.phone_home_url {
            check_http_url("phone_home_url", url)?;
        }
        Ok(())
    }
}

/// The seed's files as (name, content), in the order `meta-data`,
/// `user-data`, `network-config`. Validates `net` ([`NetworkVars::validate`])
/// and `seed` first. `network-config` is version 2 with the interface names
/// and pinning of [`super::render_target_network`]'s netplan file; its
/// default routes say `0.0.0.0/0` because cloud-init 22.4 refuses netplan's
/// `default` when it converts v2 for non-netplan systems.
pub fn render_nocloud_seed(
    net: &NetworkVars,
    seed: &SeedInput,
) -> Result<Vec<(String, String)>, RenderError> {
    net.validate()?;
    seed.validate()?;
    let m = Model::new(net);

    let meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        q(&seed.instance_id),
        q(&net.hostname)
    );

    let mut user_data = format!(
        "#cloud-config\n{}hostname: {}\nfqdn: {}\n",
        m.banner("#"),
        q(&net.hostname),
        q(&m.fqdn)
    );
    if !seed.ssh_authorized_keys.is_empty() {
        user_data.push_str("ssh_authorized_keys:\n");
        for key in &seed.ssh_authorized_keys {
            user_data.push_str(&format!("  - {}\n", q(key)));
        }
    }
    user_data.push_str("disable_root: false\n");
    if let Some(url) = &seed.phone_home_url {
        user_data.push_str(&format!(
            "phone_home:\n  url: {}\n  post: [{}, {}]\n  tries: 10\n",
            q(url),
            q("instance_id"),
            q("hostname")
        ));
    }

    let network_config = format!("{}{}", m.banner("#"), body(&m, 0, DefaultRoute::Cidr));

    Ok(vec![
        ("meta-data".to_string(), meta_data),
        ("user-data".to_string(), user_data),
        ("network-config".to_string(), network_config),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkVars {
        serde_json::from_str(crate::EXAMPLE_NETWORK_JSON).unwrap()
    }

    fn seed() -> SeedInput {
        SeedInput {
            instance_id: "deploy-7f3a".into(),
            ssh_authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJhY2tib290 ops@example".into(),
            ],
            phone_home_url: Some("http://10.0.0.1:8080/api/v1/deploy/7f3a/booted".into()),
        }
    }

    #[test]
    fn files_parse_as_yaml_with_the_given_values() {
        let files = render_nocloud_seed(&net(), &seed()).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta-data", "user-data", "network-config"]);
        let yaml = |i: usize| serde_yaml::from_str::<serde_yaml::Value>(&files[i].1).unwrap();
        let meta = yaml(0);
        assert_eq!(meta["instance-id"].as_str(), Some("deploy-7f3a"));
        assert_eq!(meta["local-hostname"].as_str(), Some("node1"));
        assert!(files[1].1.starts_with("#cloud-config\n"));
        let user = yaml(1);
        assert_eq!(user["fqdn"].as_str(), Some("node1.rack1.example.com"));
        assert_eq!(user["disable_root"].as_bool(), Some(false));
        assert_eq!(
            user["ssh_authorized_keys"][0].as_str(),
            Some(seed().ssh_authorized_keys[0].as_str())
        );
        assert_eq!(user["phone_home"]["tries"].as_u64(), Some(10));
        assert_eq!(user["phone_home"]["post"][1].as_str(), Some("hostname"));
        let netcfg = yaml(2);
        assert_eq!(netcfg["version"].as_u64(), Some(2));
        assert_eq!(
            netcfg["ethernets"]["lan0"]["match"]["macaddress"].as_str(),
            Some("52:54:00:00:00:01")
        );
    }

    #[test]
    fn optional_parts_are_left_out() {
        let files = render_nocloud_seed(
            &net(),
            &SeedInput {
                instance_id: "d1".into(),
                ..SeedInput::default()
            },
        )
        .unwrap();
        assert!(!files[1].1.contains("phone_home"));
        assert!(!files[1].1.contains("ssh_authorized_keys"));
    }

    /// A named change to the seed input.
    type Mutation = (&'static str, Box<dyn Fn(&mut SeedInput)>);

    #[test]
    fn bad_seed_values_are_named() {
        let cases: Vec<Mutation> = vec![
            ("instance_id", Box::new(|s| s.instance_id.clear())),
            ("instance_id", Box::new(|s| s.instance_id = "a b".into())),
            (
                "ssh_authorized_keys[0]",
                Box::new(|s| s.ssh_authorized_keys[0] = "not a key".into()),
            ),
            (
                "phone_home_url",
                Box::new(|s| s.phone_home_url = Some("ftp://x/".into())),
            ),
            (
                "phone_home_url",
                Box::new(|s| s.phone_home_url = Some("http://x/$INSTANCE_ID".into())),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = seed();
            mutate(&mut s);
            match render_nocloud_seed(&net(), &s) {
                Err(
                    RenderError::InvalidValue { name, .. } | RenderError::MissingValue { name },
                ) => {
                    assert_eq!(name, field)
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
