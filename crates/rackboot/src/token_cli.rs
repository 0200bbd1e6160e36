//! `rackboot token`: named API tokens with roles. `create` prints the token
//! once; `list` shows names, roles and use, never a token; `revoke` refuses
//! a token at once; `whoami` names the token in use.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Api, ClientArgs, seg};
use crate::output::{Format, Table, print_json};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (once: the server keeps only its hash).
    /// Roles: viewer (reads), operator (power, boot, installs, workflows,
    /// maintenance), admin (everything: machines, profiles, selectors,
    /// templates, catalogs, webhooks, tokens).
    Create {
        /// 1-63 letters, digits, '.', '_' or '-'; recorded as `api:NAME`
        /// in what the token changes.
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens: name, role, where it comes from, created, last used.
    List(ClientArgs),
    /// Revoke a token: every request with it is refused from now on.
    Revoke {
        /// Token name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The name and role of the token this CLI uses.
    Whoami(ClientArgs),
}

fn when(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

pub async fn token(cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { name, role, client } => {
            let api = Api::new(&client)?;
            let created: Value = api
                .post("/tokens", &json!({"name": name, "role": role}))
                .await?;
            let Some(token) = created["token"].as_str() else {
                bail!("the server answered without a token: {created}");
            };
            match client.output {
                Format::Json => print_json(&created),
                // The token alone on standard output, for `$(...)`; the
                // rest for people on standard error.
                Format::Text => {
                    outln!("{token}");
                    eprintln!(
                        "token {name:?} ({role}) created; it is shown only now: keep it (RACKBOOT_TOKEN or --token)"
                    );
                }
            }
        }
        TokenCmd::List(client) => {
            let tokens: Vec<Value> = Api::new(&client)?.get("/tokens").await?;
            if client.output == Format::Json {
                print_json(&tokens);
                return Ok(());
            }
            let mut t = Table::new(["NAME", "ROLE", "SOURCE", "CREATED", "BY", "LAST USED"]);
            for tok in &tokens {
                t.row([
                    tok["name"].as_str().unwrap_or("?").to_string(),
                    tok["role"].as_str().unwrap_or("?").to_string(),
                    tok["source"].as_str().unwrap_or("?").to_string(),
                    when(&tok["created_at"]),
                    tok["created_by"].as_str().unwrap_or("-").to_string(),
                    when(&tok["last_used_at"]),
                ]);
            }
            t.print();
        }
        TokenCmd::Revoke { name, client } => {
            let api = Api::new(&client)?;
            let revoked: Value = api.delete_json(&format!("/tokens/{}", seg(&name))).await?;
            match client.output {
                Format::Json => print_json(&revoked),
                Format::Text => outln!(
                    "revoked token {:?} ({})",
                    name,
                    revoked["role"].as_str().unwrap_or("?")
                ),
            }
        }
        TokenCmd::Whoami(client) => {
            let me: Value = Api::new(&client)?.get("/whoami").await?;
            match client.output {
                Format::Json => print_json(&me),
                Format::Text => outln!(
                    "{} ({})",
                    me["name"].as_str().unwrap_or("?"),
                    me["role"].as_str().unwrap_or("?")
                ),
            }
        }
    }
    Ok(())
}
