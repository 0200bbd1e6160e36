//! The template engine: minijinja with strict undefined, a fuel budget, no
//! loader (templates are the built-in defaults or an override string), XML
//! auto-escaping for the XML formats, and printing of unset values refused.

use base64::Engine as _;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};
use rackboot_core::OsFamily;

use crate::context::Context;
use crate::vars::{InstallVars, RenderSecrets};
use crate::{RenderError, TemplateError, TemplateErrorKind, check};

/// Work budget per render. The built-in templates use well under a tenth of
/// it (asserted in tests); a runaway loop stops with `OutOfFuel` instead of
/// hanging a request.
pub const FUEL: u64 = 1_000_000;

/// One built-in template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinTemplate {
    pub family: OsFamily,
    /// Versions it serves, matched on the version's leading components
    /// (`9` serves `9`, `9.4`, `9.4-x86_64`; `22.04` serves `22.04.5`).
    pub versions: &'static [&'static str],
    /// Name shown in errors (`rhel9-10.ks`).
    pub name: &'static str,
    pub source: &'static str,
}

/// Every built-in template. RHEL covers RHEL, Rocky, Alma and CentOS Stream.
pub const BUILTIN_TEMPLATES: &[BuiltinTemplate] = &[
    BuiltinTemplate {
        family: OsFamily::Rhel,
        versions: &["8"],
        name: "rhel8.ks",
        source: include_str!("../templates/rhel8.ks"),
    },
    BuiltinTemplate {
        family: OsFamily::Rhel,
        versions: &["9", "10"],
        name: "rhel9-10.ks",
        source: include_str!("../templates/rhel9-10.ks"),
    },
    BuiltinTemplate {
        family: OsFamily::Esxi,
        versions: &["7", "8"],
        name: "esxi.ks",
        source: include_str!("../templates/esxi.ks"),
    },
    BuiltinTemplate {
        family: OsFamily::Debian,
        versions: &["11", "12"],
        name: "debian.preseed",
        source: include_str!("../templates/debian.preseed"),
    },
    BuiltinTemplate {
        family: OsFamily::Ubuntu,
        versions: &["22.04", "24.04"],
        name: "ubuntu.user-data",
        source: include_str!("../templates/ubuntu.user-data"),
    },
    BuiltinTemplate {
        family: OsFamily::Suse,
        versions: &["15"],
        name: "sles15.xml",
        source: include_str!("../templates/sles15.xml"),
    },
    BuiltinTemplate {
        family: OsFamily::Windows,
        versions: &["2019", "2022"],
        name: "windows.xml",
        source: include_str!("../templates/windows.xml"),
    },
];

/// The WinPE start script wimboot injects next to unattend.xml (see
/// [`crate::boot`]); rendered with the same variables.
const WINDOWS_INSTALL_CMD: &str = include_str!("../templates/windows-install.cmd");
/// Makes WinPE run install.cmd instead of its default shell.
pub const WINDOWS_WINPESHL_INI: &str = "[LaunchApps]\r\n\"install.cmd\"\r\n";

fn version_matches(pattern: &str, version: &str) -> bool {
    let v: Vec<&str> = version.split(['.', '-', ' ', '_']).collect();
    let p: Vec<&str> = pattern.split('.').collect();
    v.len() >= p.len() && p.iter().zip(&v).all(|(a, b)| a == b)
}

/// Windows Server releases by NT build: the OS catalog reads the build
/// (`10.0.20348`) from install.wim, operators and templates say `2022`.
const WINDOWS_SERVER_BUILDS: &[(&str, &str)] = &[
    ("10.0.14393", "2016"),
    ("10.0.17763", "2019"),
    ("10.0.20348", "2022"),
    ("10.0.26100", "2025"),
];

/// The version as templates know it: Windows NT builds become their Windows
/// Server release; everything else is unchanged.
pub fn product_version(family: OsFamily, version: &str) -> &str {
    if family == OsFamily::Windows {
        for (build, release) in WINDOWS_SERVER_BUILDS {
            if version_matches(build, version) {
                return release;
            }
        }
    }
    version
}

/// The built-in template for a family and version, e.g. (Rhel, "9.4").
pub fn builtin_template(
    family: OsFamily,
    version: &str,
) -> Result<&'static BuiltinTemplate, RenderError> {
    let version = product_version(family, version);
    BUILTIN_TEMPLATES
        .iter()
        .filter(|t| t.family == family)
        .find(|t| t.versions.iter().any(|p| version_matches(p, version)))
        .ok_or_else(|| RenderError::UnknownVersion {
            family,
            version: version.to_string(),
            known: BUILTIN_TEMPLATES
                .iter()
                .filter(|t| t.family == family)
                .flat_map(|t| t.versions.iter().copied())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Which template to render.
#[derive(Debug, Clone, Copy)]
pub enum TemplateChoice<'a> {
    /// The built-in default for the family and version.
    Builtin,
    /// A user template (from the store).
    Override(&'a str),
}

/// A rendered install file and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub family: OsFamily,
    /// `kickstart`, `preseed`, `autoinstall`, `autoyast`, `unattend`.
    pub format: &'static str,
    /// The name the installer expects when it matters (`user-data` for
    /// Ubuntu's NoCloud, `unattend.xml` for wimboot), else a conventional one.
    pub file_name: &'static str,
    pub content_type: &'static str,
    pub body: String,
    /// Files served beside the main one (same URL directory):
    /// Ubuntu `meta-data` and `vendor-data`; Windows `winpeshl.ini` and
    /// `install.cmd`.
    pub companions: Vec<Companion>,
}

/// A file served next to the rendered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Companion {
    pub file_name: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

/// File name and content type of each family's rendered file.
pub fn file_name(family: OsFamily) -> (&'static str, &'static str) {
    match family {
        OsFamily::Rhel | OsFamily::Esxi => ("ks.cfg", "text/plain; charset=utf-8"),
        OsFamily::Debian => ("preseed.cfg", "text/plain; charset=utf-8"),
        OsFamily::Ubuntu => ("user-data", "text/cloud-config; charset=utf-8"),
        OsFamily::Suse => ("autoinst.xml", "application/xml; charset=utf-8"),
        OsFamily::Windows => ("unattend.xml", "application/xml; charset=utf-8"),
    }
}

fn is_xml(family: OsFamily) -> bool {
    matches!(family, OsFamily::Suse | OsFamily::Windows)
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Quotes one word for POSIX sh: `'it'\''s'`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn environment(family: OsFamily, fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(fuel));
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("static syntax config"),
    );
    let xml = is_xml(family);
    env.set_auto_escape_callback(move |_| {
        if xml {
            AutoEscape::Custom("xml".into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "printed a value that is not set (none); guard it with {% if ... %}",
            ));
        }
        if value.is_safe() {
            return out.write_str(&value.to_string()).map_err(Error::from);
        }
        match state.auto_escape() {
            AutoEscape::Custom(name) if name == "xml" => out
                .write_str(&xml_escape(&value.to_string()))
                .map_err(Error::from),
            _ => minijinja::escape_formatter(out, state, value),
        }
    });
    env.add_filter("b64encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    });
    // PowerShell's -EncodedCommand takes base64 of UTF-16LE.
    env.add_filter("utf16_b64encode", |s: String| {
        let bytes: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    env.add_filter("sh_quote", |s: String| sh_quote(&s));
    env.add_filter("xml", |s: String| Value::from_safe_string(xml_escape(&s)));
    env.add_filter("netmask", |prefix: u8| crate::context::netmask(prefix));
    env.add_filter("yaml", |v: Value| -> Result<String, Error> {
        serde_json::to_string(&v)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env
}

fn template_error(err: &Error, source: &str, fallback_name: &str) -> TemplateError {
    let kind = match err.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape => TemplateErrorKind::Syntax,
        ErrorKind::UndefinedError => TemplateErrorKind::Undefined,
        ErrorKind::OutOfFuel => TemplateErrorKind::OutOfFuel,
        ErrorKind::InvalidOperation if err.to_string().contains("not set (none)") => {
            TemplateErrorKind::Undefined
        }
        _ => TemplateErrorKind::Runtime,
    };
    let mut reason = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    // Show the offending source text (`{{ foo.bar }}`) so the operator sees
    // which value it was.
    if let Some(range) = err.range()
        && let Some(snippet) = source.get(range)
        && !snippet.is_empty()
        && snippet.len() <= 200
    {
        reason.push_str(&format!(" (at `{}`)", snippet.trim()));
    }
    TemplateError {
        name: err.name().unwrap_or(fallback_name).to_string(),
        line: err.line(),
        reason,
        kind,
    }
}

/// Parses and renders one template source against a context.
fn render_source(
    family: OsFamily,
    name: &str,
    source: &str,
    ctx: &Context,
) -> Result<String, TemplateError> {
    render_source_with_fuel(family, name, source, ctx, FUEL)
}

fn render_source_with_fuel(
    family: OsFamily,
    name: &str,
    source: &str,
    ctx: &Context,
    fuel: u64,
) -> Result<String, TemplateError> {
    let mut env = environment(family, fuel);
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| template_error(&e, source, name))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| template_error(&e, source, name))?;
    tmpl.render(Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| template_error(&e, source, name))
}

/// Checks that a template parses, without rendering it.
pub(crate) fn parse_only(family: OsFamily, name: &str, source: &str) -> Result<(), TemplateError> {
    let mut env = environment(family, FUEL);
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| template_error(&e, source, name))
}

/// Renders the install file for one machine.
///
/// `version` is the OS version from the catalog (`9.4`, `12`, `22.04`,
/// `15-SP5`, `2022`); it picks the built-in template and is visible to
/// templates as `os.version`/`os.major`. Values are validated first (errors
/// name the value), the template is rendered with a fuel budget, and the
/// output must pass the family's well-formedness check: a caller never gets
/// a half file.
pub fn render(
    family: OsFamily,
    version: &str,
    template: TemplateChoice<'_>,
    vars: &InstallVars,
    secrets: &RenderSecrets,
) -> Result<Rendered, RenderError> {
    let (name, source) = match template {
        TemplateChoice::Builtin => {
            let t = builtin_template(family, version)?;
            (t.name, t.source)
        }
        TemplateChoice::Override(source) => (override_name(family), source),
    };
    let ctx = Context::build(family, product_version(family, version), vars, secrets)?;
    let body = render_source(family, name, source, &ctx)?;
    check::check_rendered(family, &body)?;
    // Without a callback the machine would reinstall forever: a template
    // that drops both is refused. (A built-in template with `installed_url`
    // carries `callback_url` inside the installed system's first-boot unit,
    // which may be encoded.)
    let appears = |url: &str| body.contains(url) || body.contains(&xml_escape(url));
    if !appears(&vars.callback_url) && !vars.installed_url.as_deref().is_some_and(appears) {
        return Err(RenderError::Malformed {
            format: family.automation_format(),
            reason: "the completion callback_url does not appear in the rendered file (its last step must call it)".into(),
        });
    }
    let (file_name, content_type) = file_name(family);
    let companions = match family {
        // cloud-init's NoCloud fetches DIR/meta-data (required) and
        // DIR/vendor-data (optional; served empty so no 404 is logged).
        OsFamily::Ubuntu => vec![
            Companion {
                file_name: "meta-data",
                content_type: "text/plain; charset=utf-8",
                body: format!("instance-id: rackboot-{}\n", vars.hostname),
            },
            Companion {
                file_name: "vendor-data",
                content_type: "text/plain; charset=utf-8",
                body: String::new(),
            },
        ],
        OsFamily::Windows => {
            let cmd = render_source(family, "windows-install.cmd", WINDOWS_INSTALL_CMD, &ctx)?;
            vec![
                Companion {
                    file_name: "winpeshl.ini",
                    content_type: "text/plain; charset=utf-8",
                    body: WINDOWS_WINPESHL_INI.to_string(),
                },
                Companion {
                    file_name: "install.cmd",
                    content_type: "text/plain; charset=utf-8",
                    // cmd.exe wants CRLF line ends.
                    body: cmd.replace("\r\n", "\n").replace('\n', "\r\n"),
                },
            ]
        }
        _ => vec![],
    };
    Ok(Rendered {
        family,
        format: family.automation_format(),
        file_name,
        content_type,
        body,
        companions,
    })
}

fn override_name(family: OsFamily) -> &'static str {
    match family {
        OsFamily::Rhel => "override.ks",
        OsFamily::Esxi => "override-esxi.ks",
        OsFamily::Debian => "override.preseed",
        OsFamily::Ubuntu => "override.user-data",
        OsFamily::Suse => "override-autoyast.xml",
        OsFamily::Windows => "override-unattend.xml",
    }
}

/// Checks a user template before it is stored: it must parse (errors carry
/// the line and reason), render for the built-in sample machine of the
/// family, and produce a well-formed file. Call at upload time.
pub fn validate_template(family: OsFamily, source: &str) -> Result<(), TemplateError> {
    let name = override_name(family);
    parse_only(family, name, source)?;
    let (version, vars, secrets) = crate::sample::sample_machine(family);
    let to_template_error = |e: RenderError| match e {
        RenderError::Template(t) => t,
        other => TemplateError {
            name: name.to_string(),
            line: None,
            reason: format!("does not render for the sample machine: {other}"),
            kind: TemplateErrorKind::Runtime,
        },
    };
    render(
        family,
        version,
        TemplateChoice::Override(source),
        &vars,
        &secrets,
    )
    .map(|_| ())
    .map_err(to_template_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_builds_from_the_catalog_find_their_release() {
        assert_eq!(product_version(OsFamily::Windows, "10.0.20348"), "2022");
        assert_eq!(product_version(OsFamily::Windows, "10.0.17763.1"), "2019");
        assert_eq!(product_version(OsFamily::Windows, "2022"), "2022");
        assert_eq!(product_version(OsFamily::Rhel, "10.0"), "10.0");
        assert_eq!(
            builtin_template(OsFamily::Windows, "10.0.20348")
                .unwrap()
                .name,
            "windows.xml"
        );
        assert!(builtin_template(OsFamily::Windows, "10.0.9999").is_err());
    }

    #[test]
    fn builtins_use_a_tenth_of_the_fuel_at_most() {
        for t in BUILTIN_TEMPLATES {
            let (version, vars, secrets) = crate::sample::sample_machine(t.family);
            let ctx = Context::build(t.family, version, &vars, &secrets).unwrap();
            render_source_with_fuel(t.family, t.name, t.source, &ctx, FUEL / 10)
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        }
        let ctx = {
            let (version, vars, secrets) = crate::sample::sample_machine(OsFamily::Windows);
            Context::build(OsFamily::Windows, version, &vars, &secrets).unwrap()
        };
        render_source_with_fuel(
            OsFamily::Windows,
            "cmd",
            WINDOWS_INSTALL_CMD,
            &ctx,
            FUEL / 10,
        )
        .unwrap();
    }

    #[test]
    fn no_builtin_line_ends_in_a_block_tag_after_text() {
        // trim_blocks eats the newline after a block tag, so `text{% endif %}`
        // at the end of a line would glue the next line onto it.
        for t in BUILTIN_TEMPLATES
            .iter()
            .map(|t| (t.name, t.source))
            .chain([("windows-install.cmd", WINDOWS_INSTALL_CMD)])
        {
            for (i, line) in t.1.lines().enumerate() {
                let trimmed = line.trim();
                if trimmed.ends_with("%}") && !trimmed.starts_with("{%") {
                    panic!("{} line {}: {line}", t.0, i + 1);
                }
            }
        }
    }

    #[test]
    fn version_matching() {
        assert_eq!(
            builtin_template(OsFamily::Rhel, "9.4").unwrap().name,
            "rhel9-10.ks"
        );
        assert_eq!(
            builtin_template(OsFamily::Rhel, "10").unwrap().name,
            "rhel9-10.ks"
        );
        assert_eq!(
            builtin_template(OsFamily::Rhel, "8.10").unwrap().name,
            "rhel8.ks"
        );
        assert_eq!(
            builtin_template(OsFamily::Ubuntu, "22.04.5").unwrap().name,
            "ubuntu.user-data"
        );
        assert_eq!(
            builtin_template(OsFamily::Suse, "15-SP5").unwrap().name,
            "sles15.xml"
        );
        assert_eq!(
            builtin_template(OsFamily::Esxi, "7.0u3").unwrap().name,
            "esxi.ks"
        );
        for (family, bad) in [
            (OsFamily::Rhel, "7.9"),
            (OsFamily::Rhel, "90"),
            (OsFamily::Ubuntu, "22.10"),
            (OsFamily::Debian, "13"),
            (OsFamily::Windows, "2016"),
        ] {
            let e = builtin_template(family, bad).unwrap_err();
            assert!(
                matches!(e, RenderError::UnknownVersion { .. }),
                "{family} {bad}: {e}"
            );
        }
    }

    #[test]
    fn filters() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(xml_escape("a<b & 'c'"), "a&lt;b &amp; &apos;c&apos;");
    }
}
