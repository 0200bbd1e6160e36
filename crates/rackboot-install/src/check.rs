//! Post-render well-formedness checks, one per format. They catch templates
//! that render to something the installer would choke on; they are not full
//! validators (the tests additionally run pykickstart's ksvalidator).

use rackboot_core::OsFamily;

use crate::RenderError;

fn malformed(format: &'static str, reason: impl Into<String>) -> RenderError {
    RenderError::Malformed {
        format,
        reason: reason.into(),
    }
}

/// Checks a rendered file of `family`'s format.
pub fn check_rendered(family: OsFamily, body: &str) -> Result<(), RenderError> {
    match family {
        OsFamily::Rhel => check_kickstart(body),
        OsFamily::Esxi => check_esxi_kickstart(body),
        OsFamily::Debian => check_preseed(body),
        OsFamily::Ubuntu => check_autoinstall(body),
        OsFamily::Suse => check_xml(body, "autoyast", "profile"),
        OsFamily::Windows => check_xml(body, "unattend", "unattend"),
    }
}

const KS_SECTIONS: &[&str] = &[
    "%pre",
    "%pre-install",
    "%post",
    "%packages",
    "%onerror",
    "%traceback",
    "%addon",
    "%anaconda",
];

/// Anaconda kickstart: every `%section` is known and closed by `%end`, no
/// stray `%end`, and commands outside sections look like commands.
pub fn check_kickstart(body: &str) -> Result<(), RenderError> {
    const F: &str = "kickstart";
    let mut open: Option<(usize, &str)> = None;
    let mut commands = 0;
    for (i, line) in body.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        let word = t.split_whitespace().next().unwrap_or("");
        if let Some((_, section)) = open {
            if word == "%end" {
                open = None;
            } else if word.starts_with('%') && KS_SECTIONS.contains(&word) {
                return Err(malformed(
                    F,
                    format!("line {n}: {word} inside {section} (missing %end)"),
                ));
            }
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if KS_SECTIONS.contains(&word) {
            open = Some((n, word));
        } else if word == "%end" {
            return Err(malformed(F, format!("line {n}: %end without a section")));
        } else if word == "%include" || word == "%ksappend" {
            if t.split_whitespace().nth(1).is_none() {
                return Err(malformed(F, format!("line {n}: {word} without a file")));
            }
        } else if word.starts_with('%') {
            return Err(malformed(F, format!("line {n}: unknown section {word}")));
        } else if !word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_')
        {
            return Err(malformed(
                F,
                format!("line {n}: {word:?} is not a kickstart command"),
            ));
        } else {
            commands += 1;
        }
    }
    if let Some((n, section)) = open {
        return Err(malformed(F, format!("{section} from line {n} has no %end")));
    }
    if commands == 0 {
        return Err(malformed(F, "no kickstart commands"));
    }
    Ok(())
}

/// ESXi commands (weasel's kickstart dialect, ESXi 7/8).
const ESXI_COMMANDS: &[&str] = &[
    "accepteula",
    "vmaccepteula",
    "clearpart",
    "dryrun",
    "install",
    "installorupgrade",
    "upgrade",
    "include",
    "%include",
    "keyboard",
    "serialnum",
    "vmserialnum",
    "network",
    "paranoid",
    "part",
    "partition",
    "reboot",
    "rootpw",
];

/// ESXi kickstart: only ESXi commands outside script sections, sections are
/// `%pre`, `%post`, `%firstboot` (each runs to the next section or the end of
/// file, no `%end`), and the mandatory commands are present.
pub fn check_esxi_kickstart(body: &str) -> Result<(), RenderError> {
    const F: &str = "esxi kickstart";
    let mut in_section = false;
    let mut seen: Vec<&str> = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        let word = t.split_whitespace().next().unwrap_or("");
        if matches!(word, "%pre" | "%post" | "%firstboot") {
            in_section = true;
            continue;
        }
        if in_section {
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if word == "%end" {
            return Err(malformed(F, format!("line {n}: ESXi scripts have no %end")));
        }
        if !ESXI_COMMANDS.contains(&word) {
            return Err(malformed(
                F,
                format!("line {n}: {word:?} is not an ESXi kickstart command"),
            ));
        }
        seen.push(word);
    }
    let has = |names: &[&str]| names.iter().any(|c| seen.contains(c));
    if !has(&["vmaccepteula", "accepteula"]) {
        return Err(malformed(F, "vmaccepteula is missing"));
    }
    if !has(&["rootpw"]) {
        return Err(malformed(F, "rootpw is missing"));
    }
    if !has(&[
        "install",
        "installorupgrade",
        "upgrade",
        "%include",
        "include",
    ]) {
        return Err(malformed(
            F,
            "no install command (or %include providing one)",
        ));
    }
    Ok(())
}

const PRESEED_TYPES: &[&str] = &[
    "string",
    "boolean",
    "select",
    "multiselect",
    "note",
    "text",
    "password",
    "title",
    "error",
];

/// debconf preseed: every logical line (continuations joined) is
/// `owner question type [value]`; booleans are `true`/`false`.
pub fn check_preseed(body: &str) -> Result<(), RenderError> {
    const F: &str = "preseed";
    let mut logical = String::new();
    let mut start = 0;
    let mut entries = 0;
    for (i, line) in body.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        check_preseed_entry(&entry).map_err(|r| malformed(F, format!("line {start}: {r}")))?;
        entries += 1;
    }
    if !logical.is_empty() {
        return Err(malformed(
            F,
            format!("line {start}: file ends inside a continued line"),
        ));
    }
    if entries == 0 {
        return Err(malformed(F, "no preseed entries"));
    }
    Ok(())
}

fn check_preseed_entry(entry: &str) -> Result<(), String> {
    let mut words = entry.split_whitespace();
    let owner = words.next().unwrap_or("");
    let question = words.next().ok_or("expected `owner question type value`")?;
    let kind = words.next().ok_or("missing type")?;
    let value: Vec<&str> = words.collect();
    let name_ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    if !name_ok(owner, b"-.+_") {
        return Err(format!("bad owner {owner:?}"));
    }
    if !name_ok(question, b"-./_+") {
        return Err(format!("bad question name {question:?}"));
    }
    if !PRESEED_TYPES.contains(&kind) {
        return Err(format!("unknown type {kind:?} for {question}"));
    }
    if kind == "boolean" && !matches!(value.as_slice(), ["true"] | ["false"]) {
        return Err(format!("{question}: boolean must be true or false"));
    }
    Ok(())
}

/// Ubuntu autoinstall: `#cloud-config` first line, valid YAML, a mapping
/// with an `autoinstall` mapping that has `version: 1`.
pub fn check_autoinstall(body: &str) -> Result<(), RenderError> {
    const F: &str = "autoinstall";
    if body.lines().next().map(str::trim_end) != Some("#cloud-config") {
        return Err(malformed(F, "first line must be #cloud-config"));
    }
    let doc: serde_yaml::Value =
        serde_yaml::from_str(body).map_err(|e| malformed(F, format!("invalid YAML: {e}")))?;
    let auto = doc
        .get("autoinstall")
        .ok_or_else(|| malformed(F, "no top-level `autoinstall:` key"))?;
    if !auto.is_mapping() {
        return Err(malformed(F, "`autoinstall` is not a mapping"));
    }
    if auto.get("version").and_then(serde_yaml::Value::as_u64) != Some(1) {
        return Err(malformed(F, "`autoinstall.version` must be 1"));
    }
    Ok(())
}

/// Well-formed XML whose root element is `root` (namespace ignored).
pub fn check_xml(body: &str, format: &'static str, root: &str) -> Result<(), RenderError> {
    // AutoYaST profiles carry `<!DOCTYPE profile>`; roxmltree never fetches
    // external entities and bounds entity expansion.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(body, options)
        .map_err(|e| malformed(format, e.to_string()))?;
    let name = doc.root_element().tag_name().name();
    if name != root {
        return Err(malformed(
            format,
            format!("root element is <{name}>, expected <{root}>"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kickstart_sections_must_close() {
        check_kickstart("lang en_US\n%post\necho\n%end\n").unwrap();
        let e = check_kickstart("lang en_US\n%post\necho\n").unwrap_err();
        assert!(e.to_string().contains("no %end"), "{e}");
        let e = check_kickstart("lang en_US\n%post\n%packages\n%end\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = check_kickstart("lang en_US\n%end\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = check_kickstart("lang en_US\nFOO=1\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(check_kickstart("# only a comment\n").is_err());
    }

    #[test]
    fn esxi_shape() {
        let ok = "vmaccepteula\nrootpw --iscrypted x\ninstall --firstdisk\nnetwork --bootproto=dhcp\nreboot\n%post --interpreter=busybox\necho hi\n";
        check_esxi_kickstart(ok).unwrap();
        assert!(check_esxi_kickstart(&ok.replace("vmaccepteula\n", "")).is_err());
        assert!(check_esxi_kickstart(&ok.replace("reboot", "autopart")).is_err());
        assert!(
            check_esxi_kickstart(&format!("{ok}%end\n")).is_ok(),
            "inside %post"
        );
        assert!(check_esxi_kickstart("vmaccepteula\n%end\n").is_err());
    }

    #[test]
    fn preseed_lines() {
        check_preseed("# c\nd-i debian-installer/locale string en_US\n\nd-i passwd/make-user boolean false\nd-i preseed/late_command string a; \\\n  b\n").unwrap();
        let e = check_preseed("d-i foo/bar string x\nd-i foo/baz strng x\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(check_preseed("d-i foo/bar boolean yes\n").is_err());
        assert!(check_preseed("d-i foo/bar\n").is_err());
        assert!(check_preseed("d-i foo/bar string \\\n").is_err());
        assert!(check_preseed("d-i a/b string ok\n{{ x }} a b\n").is_err());
    }

    #[test]
    fn autoinstall_shape() {
        check_autoinstall("#cloud-config\nautoinstall:\n  version: 1\n").unwrap();
        assert!(check_autoinstall("autoinstall:\n  version: 1\n").is_err());
        assert!(check_autoinstall("#cloud-config\nfoo: 1\n").is_err());
        assert!(check_autoinstall("#cloud-config\nautoinstall:\n  version: 2\n").is_err());
        assert!(check_autoinstall("#cloud-config\nautoinstall: [\n").is_err());
    }

    #[test]
    fn xml_roots() {
        check_xml(
            "<?xml version=\"1.0\"?><profile xmlns=\"http://www.suse.com/1.0/yast2ns\"/>",
            "autoyast",
            "profile",
        )
        .unwrap();
        assert!(check_xml("<profile><a></profile>", "autoyast", "profile").is_err());
        assert!(check_xml("<other/>", "autoyast", "profile").is_err());
    }
}
