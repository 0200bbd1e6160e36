//! `rackboot webhook`: where alerts go. Add (or replace), list, show,
//! delete, follow a webhook's deliveries, and send it a test.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use rackboot_core::{Delivery, DeliveryState, Webhook};
use serde_json::{Value, json};

use crate::client::{Api, ClientArgs, seg};
use crate::output::{Format, Table, print_json};

#[derive(Subcommand)]
pub enum WebhookCmd {
    /// Create or replace a webhook: `rackboot webhook add ops https://... --events warnings`.
    /// A new webhook without --secret-stdin gets a generated secret, printed once.
    Add {
        /// Webhook name.
        name: String,
        /// http:// or https:// URL the events are POSTed to.
        url: String,
        /// Event kinds (workflow_failed,agent_lost), `warnings` or `*`;
        /// comma-separated. Default: warnings.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Read the HMAC secret from the first line of stdin (otherwise a new
        /// webhook gets a generated one and an existing one keeps its own).
        #[arg(long)]
        secret_stdin: bool,
        /// Store it disabled: it gets no events until added again without this.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List webhooks.
    List(ClientArgs),
    /// Show one webhook and its latest deliveries.
    Show {
        /// Webhook name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a webhook and its queued deliveries.
    Delete {
        /// Webhook name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A webhook's deliveries, newest first.
    Deliveries {
        /// Webhook name.
        name: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a test event (`webhook_test`) to one webhook and wait for its first attempt.
    Test {
        /// Webhook name.
        name: String,
        /// Seconds to wait for the first attempt.
        #[arg(long, default_value_t = 15)]
        wait: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The secret from the first line of `input`, without its line ending.
fn read_secret(input: impl BufRead) -> Result<String> {
    let line = input
        .lines()
        .next()
        .context("--secret-stdin: stdin is empty")?
        .context("--secret-stdin: cannot read stdin")?;
    let secret = line.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        bail!("--secret-stdin: the first line of stdin is empty");
    }
    Ok(secret)
}

fn events_text(events: &[String]) -> String {
    if events.is_empty() {
        "warnings".into()
    } else {
        events.join(",")
    }
}

fn webhook_table(hooks: &[Webhook]) {
    let mut t = Table::new(["NAME", "ENABLED", "EVENTS", "URL"]);
    for h in hooks {
        t.row([
            h.name.clone(),
            if h.enabled { "yes" } else { "no" }.into(),
            events_text(&h.events),
            h.url.clone(),
        ]);
    }
    t.print();
}

/// "delivered 12:00:01", "retry at 12:00:05", "failed".
fn delivery_when(d: &Delivery) -> String {
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    match d.state {
        DeliveryState::Delivered => d.delivered_at.map(time).unwrap_or_default(),
        DeliveryState::Pending => format!("next {}", time(d.next_attempt_at)),
        DeliveryState::Failed => "gave up".into(),
    }
}

fn delivery_table(deliveries: &[Delivery]) {
    let mut t = Table::new([
        "ID", "EVENT", "KIND", "STATE", "ATTEMPTS", "STATUS", "WHEN", "ERROR",
    ]);
    for d in deliveries {
        t.row([
            d.id.to_string(),
            d.event_id.to_string(),
            rackboot_fleet::webhooks::delivery_kind_name(d).to_string(),
            d.state.as_str().to_string(),
            d.attempts.to_string(),
            d.last_status.map_or_else(|| "-".into(), |s| s.to_string()),
            delivery_when(d),
            d.last_error.clone().unwrap_or_default(),
        ]);
    }
    t.print();
}

pub async fn webhook(cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Add {
            name,
            url,
            events,
            secret_stdin,
            disabled,
            client,
        } => {
            let mut body = json!({"url": url, "events": events, "enabled": !disabled});
            if secret_stdin {
                body["secret"] = json!(read_secret(std::io::stdin().lock())?);
            }
            let saved: Value = Api::new(&client)?
                .put(&format!("/webhooks/{}", seg(&name)), &body)
                .await?;
            match client.output {
                Format::Json => print_json(&saved),
                Format::Text => {
                    outln!("saved webhook {name}");
                    if let Some(secret) = saved["secret"].as_str() {
                        outln!("secret: {secret}");
                        outln!(
                            "(shown once: receivers verify X-Rackboot-Signature with it; keep it now)"
                        );
                    }
                }
            }
        }
        WebhookCmd::List(client) => {
            let hooks: Vec<Webhook> = Api::new(&client)?.get("/webhooks").await?;
            match client.output {
                Format::Json => print_json(&hooks),
                Format::Text => webhook_table(&hooks),
            }
        }
        WebhookCmd::Show { name, client } => {
            let api = Api::new(&client)?;
            let hook: Webhook = api.get(&format!("/webhooks/{}", seg(&name))).await?;
            let recent: Vec<Delivery> = api
                .get(&format!("/webhooks/{}/deliveries?limit=10", seg(&name)))
                .await?;
            match client.output {
                Format::Json => print_json(&json!({"webhook": hook, "recent_deliveries": recent})),
                Format::Text => {
                    outln!("name:     {}", hook.name);
                    outln!("url:      {}", hook.url);
                    outln!("events:   {}", events_text(&hook.events));
                    outln!("enabled:  {}", if hook.enabled { "yes" } else { "no" });
                    outln!("created:  {}", hook.created_at.to_rfc3339());
                    if recent.is_empty() {
                        outln!("no deliveries yet");
                    } else {
                        outln!("latest deliveries:");
                        delivery_table(&recent);
                    }
                }
            }
        }
        WebhookCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/webhooks/{}", seg(&name)))
                .await?;
            crate::client::print_deleted(client.output, "webhook", &name);
        }
        WebhookCmd::Deliveries {
            name,
            limit,
            client,
        } => {
            let deliveries: Vec<Delivery> = Api::new(&client)?
                .get(&format!(
                    "/webhooks/{}/deliveries?limit={limit}",
                    seg(&name)
                ))
                .await?;
            match client.output {
                Format::Json => print_json(&deliveries),
                Format::Text => delivery_table(&deliveries),
            }
        }
        WebhookCmd::Test { name, wait, client } => {
            let api = Api::new(&client)?;
            let queued: Delivery = api
                .post(&format!("/webhooks/{}/test", seg(&name)), &json!({}))
                .await?;
            let tried =
                wait_first_attempt(&api, &name, queued.id, Duration::from_secs(wait)).await?;
            let d = tried.as_ref().unwrap_or(&queued);
            if client.output == Format::Json {
                print_json(d);
            }
            match tried {
                None => bail!(
                    "test delivery {} to {name} not attempted within {wait} s (is the server's alerts task running?)",
                    queued.id
                ),
                Some(d) if d.state == DeliveryState::Delivered => {
                    if client.output == Format::Text {
                        outln!(
                            "delivered test {} to {name}: HTTP {}",
                            d.id,
                            d.last_status.unwrap_or_default()
                        );
                    }
                }
                Some(d) => bail!(
                    "test delivery {} to {name} failed: {} (retried like any delivery; see `rackboot webhook deliveries {name}`)",
                    d.id,
                    d.last_error.as_deref().unwrap_or("unknown error")
                ),
            }
        }
    }
    Ok(())
}

/// Polls the webhook's deliveries until `id` has been tried once.
async fn wait_first_attempt(
    api: &Api,
    name: &str,
    id: i64,
    wait: Duration,
) -> Result<Option<Delivery>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let deliveries: Vec<Delivery> = api
            .get(&format!("/webhooks/{}/deliveries?limit=100", seg(name)))
            .await?;
        if let Some(d) = deliveries.into_iter().find(|d| d.id == id)
            && d.attempts > 0
        {
            return Ok(Some(d));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_from_stdin() {
        assert_eq!(read_secret(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_secret(&b"s3cret\r\nignored\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_secret(&b"no newline"[..]).unwrap(), "no newline");
        assert!(read_secret(&b""[..]).is_err());
        assert!(read_secret(&b"\nsecond"[..]).is_err());
    }
}
