//! `rackboot machine import FILE`: enrol many machines from a CSV or JSON
//! file, one `POST /api/v1/machines:bulk` (one store transaction) per chunk.
//!
//! CSV: a header row naming the columns, then one machine per row.
//! `name` and `macs` are required; `macs` holds one or more MACs separated
//! by `;` or spaces (the first is the boot NIC). Optional: `uuid`, `arch`,
//! `labels` (`key=value;key=value`), `profile` (boot this profile; empty:
//! selectors decide), `bmc` (a BMC URL as for `machine add --bmc`) and
//! `bmc_insecure` (`true`/`false`). Fields may be quoted ("a,b"; "" is a
//! quote). JSON: an array of objects as for `POST /api/v1/machines`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::{Api, ClientArgs};
use crate::output::{Format, print_json};

/// Most rows in one request (the API's bound).
pub const MAX_CHUNK: usize = 5000;

/// One row of the file as the API takes it, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// For people: "line 7" (CSV) or "item 3" (JSON).
    pub origin: String,
    pub body: Value,
}

/// What the API said about one row.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct BulkRow {
    index: usize,
    name: String,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BulkResult {
    results: Vec<BulkRow>,
}

/// A row that was not enrolled.
#[derive(Debug, Serialize)]
struct Failure {
    origin: String,
    name: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    rows: usize,
    created: usize,
    failed: usize,
    failures: Vec<Failure>,
}

/// csv or json: `format` when given, else the file's extension.
fn format_of(path: &Path, format: Option<&str>) -> Result<&'static str> {
    match format {
        Some("csv") => Ok("csv"),
        Some("json") => Ok("json"),
        Some(other) => bail!("--format {other:?}: use csv or json"),
        None => match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok("csv"),
            Some(e) if e.eq_ignore_ascii_case("json") => Ok("json"),
            _ => bail!(
                "{}: cannot tell CSV from JSON by the name; pass --format csv|json",
                path.display()
            ),
        },
    }
}

/// The rows of a JSON file: an array of machine objects.
pub fn parse_json(text: &str) -> Result<Vec<Row>> {
    let value: Value = serde_json::from_str(text).context("the file is not valid JSON")?;
    let Value::Array(items) = value else {
        bail!("a JSON import is an array of machine objects");
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            if !body.is_object() {
                bail!("item {i}: not an object");
            }
            Ok(Row {
                origin: format!("item {i}"),
                body,
            })
        })
        .collect()
}

/// Splits CSV text into records of fields (RFC 4180: quoted fields may hold
/// commas, line breaks and doubled quotes), with the line each starts on.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut start = 1;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            '"' => bail!("line {line}: a quote inside an unquoted field"),
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                    records.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        bail!("line {start}: a quoted field is not closed");
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((start, fields));
        }
    }
    Ok(records)
}

const CSV_COLUMNS: [&str; 8] = [
    "name",
    "macs",
    "uuid",
    "arch",
    "labels",
    "profile",
    "bmc",
    "bmc_insecure",
];

/// The rows of a CSV file (see the module documentation). `bmc_password`,
/// when given, becomes every BMC's password (RACKBOOT_BMC_PASSWORD).
pub fn parse_csv(text: &str, bmc_password: Option<&str>) -> Result<Vec<Row>> {
    let mut records = csv_records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        bail!("the CSV file is empty (it needs a header row: name,macs,...)");
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    for h in &header {
        if !CSV_COLUMNS.contains(&h.as_str()) {
            bail!(
                "line 1: unknown column {h:?}; columns are {}",
                CSV_COLUMNS.join(", ")
            );
        }
    }
    for required in ["name", "macs"] {
        if !header.iter().any(|h| h == required) {
            bail!("line 1: the header has no {required:?} column");
        }
    }
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() != header.len() {
            bail!(
                "line {line}: {} fields, the header has {}",
                fields.len(),
                header.len()
            );
        }
        let get = |col: &str| -> Option<&str> {
            header
                .iter()
                .position(|h| h == col)
                .map(|i| fields[i].trim())
                .filter(|v| !v.is_empty())
        };
        let mut body = serde_json::Map::new();
        body.insert("name".into(), json!(get("name").unwrap_or("")));
        let macs: Vec<&str> = get("macs")
            .unwrap_or("")
            .split([';', ' ', '\t'])
            .filter(|m| !m.is_empty())
            .collect();
        body.insert("macs".into(), json!(macs));
        if let Some(u) = get("uuid") {
            body.insert("uuid".into(), json!(u));
        }
        if let Some(a) = get("arch") {
            body.insert("arch".into(), json!(a));
        }
        if let Some(l) = get("labels") {
            let mut labels = BTreeMap::new();
            for kv in l.split(';').map(str::trim).filter(|kv| !kv.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("line {line}: label {kv:?} is not key=value"))?;
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            body.insert("labels".into(), json!(labels));
        }
        if let Some(p) = get("profile") {
            body.insert("intent".into(), json!({"kind": "profile", "name": p}));
        }
        if let Some(url) = get("bmc") {
            let insecure = match get("bmc_insecure") {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
                Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
                Some(v) => bail!("line {line}: bmc_insecure {v:?}: use true or false"),
            };
            let mut bmc = json!({"url": url, "insecure_tls": insecure});
            if let Some(p) = bmc_password {
                bmc["password"] = json!(p);
            }
            body.insert("bmc".into(), bmc);
        }
        rows.push(Row {
            origin: format!("line {line}"),
            body: Value::Object(body),
        });
    }
    Ok(rows)
}

/// Reads `path` (`-`: standard input).
fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub async fn run(
    file: PathBuf,
    format: Option<String>,
    chunk: usize,
    client: ClientArgs,
) -> Result<()> {
    if !(1..=MAX_CHUNK).contains(&chunk) {
        bail!("--chunk {chunk}: use 1 to {MAX_CHUNK}");
    }
    let kind = format_of(&file, format.as_deref())?;
    let text = read_input(&file)?;
    let password = std::env::var("RACKBOOT_BMC_PASSWORD").ok();
    let rows = match kind {
        "csv" => parse_csv(&text, password.as_deref()),
        _ => parse_json(&text),
    }
    .with_context(|| format!("in {}", file.display()))?;
    if rows.is_empty() {
        bail!("{}: no machines to import", file.display());
    }
    let api = Api::new(&client)?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "importing {bar:30} {pos}/{len} machines ({per_sec}, {msg})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut summary = Summary {
        rows: rows.len(),
        created: 0,
        failed: 0,
        failures: Vec::new(),
    };
    bar.set_message("0 failed");
    for batch in rows.chunks(chunk) {
        let body = json!({"machines": batch.iter().map(|r| &r.body).collect::<Vec<_>>()});
        let result: BulkResult = api.post("/machines:bulk", &body).await.with_context(|| {
            format!(
                "importing {} to {} ({} imported before)",
                batch[0].origin,
                batch[batch.len() - 1].origin,
                summary.created
            )
        })?;
        for r in result.results {
            match (r.id, r.error) {
                (Some(_), _) => summary.created += 1,
                (None, error) => {
                    summary.failed += 1;
                    summary.failures.push(Failure {
                        origin: batch
                            .get(r.index)
                            .map_or_else(|| "?".into(), |row| row.origin.clone()),
                        name: r.name,
                        error: error.unwrap_or_else(|| "not enrolled".into()),
                    });
                }
            }
        }
        bar.inc(batch.len() as u64);
        bar.set_message(format!("{} failed", summary.failed));
    }
    bar.finish_and_clear();
    match client.output {
        Format::Json => print_json(&summary),
        Format::Text => {
            outln!(
                "imported {} of {} machines{}",
                summary.created,
                summary.rows,
                if summary.failed > 0 {
                    format!("; {} failed:", summary.failed)
                } else {
                    String::new()
                }
            );
            for f in &summary.failures {
                outln!("  {} ({}): {}", f.origin, f.name, f.error);
            }
        }
    }
    if summary.failed > 0 {
        bail!(
            "{} of {} machines were not imported",
            summary.failed,
            summary.rows
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_follow_rfc_4180() {
        let text = "a,b,c\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n\n2,\"two\nlines\",\n3,,";
        let got = csv_records(text).unwrap();
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b".into(), "c".into()]),
                (2, vec!["1".into(), "x, y".into(), "say \"hi\"".into()]),
                (4, vec!["2".into(), "two\nlines".into(), "".into()]),
                (6, vec!["3".into(), "".into(), "".into()]),
            ]
        );
        for (bad, why) in [("a,\"b\n", "not closed"), ("a,b\"c\n", "quote inside")] {
            let err = csv_records(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn csv_rows_become_api_bodies() {
        let text = "name,macs,labels,profile,bmc,bmc_insecure\n\
                    n1,52:54:00:00:00:01;52:54:00:00:00:02,rack=r1; role=db,debian,ipmi://admin@10.0.0.5,true\n\
                    n2,52:54:00:00:00:03,,,,\n";
        let rows = parse_csv(text, Some("pw")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].origin, "line 2");
        assert_eq!(
            rows[0].body,
            json!({
                "name": "n1",
                "macs": ["52:54:00:00:00:01", "52:54:00:00:00:02"],
                "labels": {"rack": "r1", "role": "db"},
                "intent": {"kind": "profile", "name": "debian"},
                "bmc": {"url": "ipmi://admin@10.0.0.5", "insecure_tls": true, "password": "pw"},
            })
        );
        assert_eq!(
            rows[1].body,
            json!({"name": "n2", "macs": ["52:54:00:00:00:03"]})
        );
    }

    #[test]
    fn csv_mistakes_name_the_line() {
        for (text, want) in [
            ("", "empty"),
            ("name,colour\n", "unknown column \"colour\""),
            ("name\nx\n", "no \"macs\" column"),
            ("name,macs\nx\n", "line 2: 1 fields, the header has 2"),
            ("name,macs,labels\nx,m,rack\n", "line 2: label \"rack\""),
            (
                "name,macs,bmc,bmc_insecure\nx,m,ipmi://h,maybe\n",
                "line 2: bmc_insecure",
            ),
        ] {
            let err = parse_csv(text, None).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let rows = parse_json(r#"[{"name": "a", "macs": ["52:54:00:00:00:01"]}]"#).unwrap();
        assert_eq!(rows[0].origin, "item 0");
        assert!(parse_json("{}").unwrap_err().to_string().contains("array"));
        assert!(
            parse_json("[1]")
                .unwrap_err()
                .to_string()
                .contains("item 0: not an object")
        );
    }

    #[test]
    fn the_format_comes_from_the_flag_or_the_name() {
        assert_eq!(format_of(Path::new("a.CSV"), None).unwrap(), "csv");
        assert_eq!(format_of(Path::new("a.json"), None).unwrap(), "json");
        assert_eq!(format_of(Path::new("-"), Some("json")).unwrap(), "json");
        assert!(format_of(Path::new("machines"), None).is_err());
    }
}
