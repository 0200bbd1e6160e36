//! qcow2 sources, through the real `qemu-img` (package qemu-utils): qcow2 has
//! compressed clusters, snapshots, subclusters and versions; qemu-img reads
//! them all and is what produced the file in the first place.

use std::path::Path;
use std::process::Command;

use crate::ImageError;

/// What `qemu-img info` says that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Qcow2Info {
    pub virtual_size: u64,
}

/// Why a `qemu-img info --output=json` answer is not importable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InfoProblem {
    /// The image reads another file: a backing file or an external data file.
    External {
        what: &'static str,
        target: String,
    },
    Unparsable(String),
}

/// Reads `qemu-img info --output=json` output. Images that read other files
/// are refused: converting them would pull in whatever path the (possibly
/// uploaded) image names, and the catalog copy would not be self-contained.
pub(crate) fn parse_info(json: &[u8]) -> Result<Qcow2Info, InfoProblem> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| InfoProblem::Unparsable(format!("qemu-img info output: {e}")))?;
    if let Some(backing) = value.get("backing-filename").and_then(|v| v.as_str()) {
        return Err(InfoProblem::External {
            what: "the backing file",
            target: backing.to_string(),
        });
    }
    if let Some(data_file) = value
        .pointer("/format-specific/data/data-file")
        .and_then(|v| v.as_str())
    {
        return Err(InfoProblem::External {
            what: "the external data file",
            target: data_file.to_string(),
        });
    }
    let virtual_size = value
        .get("virtual-size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| InfoProblem::Unparsable("qemu-img info gave no virtual-size".into()))?;
    Ok(Qcow2Info { virtual_size })
}

/// Reads `qemu-img check --output=json` output (exit status `code`) for a
/// file of `file_len` bytes. qemu reads past the end of a file as zeros, so a
/// truncated download converts "successfully" into a disk of zeros: the
/// check's corruption count finds missing metadata, and the end of the
/// clusters beyond the end of the file finds missing data. Compressed
/// clusters may end anywhere, so that test only applies without them (a cut
/// compressed cluster fails to decompress during the conversion instead).
pub(crate) fn parse_check(json: &[u8], code: Option<i32>, file_len: u64) -> Result<(), String> {
    // 0: clean, 3: leaked clusters only (wasted space, harmless).
    let value: serde_json::Value = match serde_json::from_slice(json) {
        Ok(value) => value,
        Err(_) if matches!(code, Some(0 | 3)) => return Ok(()),
        Err(e) => return Err(format!("exit status {code:?}, output unreadable: {e}")),
    };
    let count = |key: &str| value.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let (corruptions, check_errors) = (count("corruptions"), count("check-errors"));
    if corruptions > 0 || check_errors > 0 || !matches!(code, Some(0 | 3)) {
        return Err(format!(
            "{corruptions} corruptions, {check_errors} check errors (exit status {code:?})"
        ));
    }
    let end = count("image-end-offset");
    if count("compressed-clusters") == 0 && end > file_len {
        return Err(format!(
            "the file is {file_len} bytes but its clusters end at {end}: truncated"
        ));
    }
    Ok(())
}

/// qemu-img's complaints, at most [`STDERR_LINES`] lines of them: a badly
/// damaged image gets one line per bad cluster.
fn stderr_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.len() <= STDERR_LINES {
        return lines.join("\n");
    }
    format!(
        "{}\n({} more lines)",
        lines[..STDERR_LINES].join("\n"),
        lines.len() - STDERR_LINES
    )
}

const STDERR_LINES: usize = 10;

/// Runs `qemu-img info` on `source` (an absolute path: qemu-img takes a
/// relative `name:rest` for a protocol).
pub(crate) fn info(source: &Path) -> Result<Qcow2Info, ImageError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "qcow2"])
        .arg(source)
        .output()
        .map_err(|e| ImageError::QemuImg {
            path: source.to_path_buf(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(ImageError::Qcow2 {
            path: source.to_path_buf(),
            action: "info",
            stderr: stderr_text(&out.stderr),
        });
    }
    parse_info(&out.stdout).map_err(|problem| match problem {
        InfoProblem::External { what, target } => ImageError::Qcow2External {
            path: source.to_path_buf(),
            what,
            target,
        },
        InfoProblem::Unparsable(reason) => ImageError::Qcow2 {
            path: source.to_path_buf(),
            action: "info",
            stderr: reason,
        },
    })
}

/// Runs `qemu-img check` on `source` (absolute) and refuses a damaged image.
pub(crate) fn check(source: &Path) -> Result<(), ImageError> {
    let file_len = std::fs::metadata(source)
        .map_err(|e| ImageError::Unreadable {
            path: source.to_path_buf(),
            source: e,
        })?
        .len();
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "qcow2"])
        .arg(source)
        .output()
        .map_err(|e| ImageError::QemuImg {
            path: source.to_path_buf(),
            source: e,
        })?;
    parse_check(&out.stdout, out.status.code(), file_len).map_err(|summary| {
        let stderr = stderr_text(&out.stderr);
        ImageError::Qcow2 {
            path: source.to_path_buf(),
            action: "check",
            stderr: if stderr.is_empty() {
                summary
            } else {
                format!("{summary}: {stderr}")
            },
        }
    })
}

/// Converts `source` to a sparse raw file `dest` (both absolute paths).
/// The format is forced to qcow2: qemu-img never guesses from content.
pub(crate) fn convert_to_raw(source: &Path, dest: &Path) -> Result<(), ImageError> {
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(source)
        .arg(dest)
        .output()
        .map_err(|e| ImageError::QemuImg {
            path: source.to_path_buf(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(ImageError::Qcow2 {
            path: source.to_path_buf(),
            action: "convert",
            stderr: stderr_text(&out.stderr),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_table() {
        for (json, want) in [
            (
                r#"{"virtual-size": 2147483648, "filename": "/x.qcow2", "format": "qcow2",
                   "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}"#,
                Ok(Qcow2Info {
                    virtual_size: 2 << 30,
                }),
            ),
            (
                r#"{"virtual-size": 1, "backing-filename": "/etc/shadow"}"#,
                Err(InfoProblem::External {
                    what: "the backing file",
                    target: "/etc/shadow".into(),
                }),
            ),
            (
                r#"{"virtual-size": 1, "format-specific": {"type": "qcow2",
                   "data": {"data-file": "/dev/sda"}}}"#,
                Err(InfoProblem::External {
                    what: "the external data file",
                    target: "/dev/sda".into(),
                }),
            ),
            (
                r#"{"format": "qcow2"}"#,
                Err(InfoProblem::Unparsable(
                    "qemu-img info gave no virtual-size".into(),
                )),
            ),
        ] {
            assert_eq!(parse_info(json.as_bytes()), want, "{json}");
        }
        assert!(matches!(
            parse_info(b"not json"),
            Err(InfoProblem::Unparsable(_))
        ));
    }

    #[test]
    fn long_stderr_is_cut() {
        assert_eq!(stderr_text(b"  one\ntwo\n"), "one\ntwo");
        let many: String = (0..25).map(|i| format!("ERROR {i}\n")).collect();
        let cut = stderr_text(many.as_bytes());
        assert!(cut.starts_with("ERROR 0\n") && cut.contains("ERROR 9\n"));
        assert!(cut.ends_with("(15 more lines)") && !cut.contains("ERROR 10"));
    }

    #[test]
    fn check_table() {
        let clean = r#"{"image-end-offset": 1376256, "total-clusters": 128,
                        "check-errors": 0, "allocated-clusters": 16}"#;
        let compressed = r#"{"image-end-offset": 3407872, "compressed-clusters": 2,
                             "check-errors": 0}"#;
        for (json, code, file_len, want) in [
            (clean, Some(0), 1376256, Ok(())),
            // Leaked clusters only waste space.
            (
                r#"{"leaks": 3, "image-end-offset": 65536}"#,
                Some(3),
                65536,
                Ok(()),
            ),
            (
                clean,
                Some(0),
                1375744,
                Err("the file is 1375744 bytes but its clusters end at 1376256: truncated"),
            ),
            // Compressed clusters end anywhere.
            (compressed, Some(0), 3342848, Ok(())),
            (
                r#"{"image-end-offset": 65536, "corruptions": 3, "check-errors": 0}"#,
                Some(2),
                4096,
                Err("3 corruptions, 0 check errors (exit status Some(2))"),
            ),
            (
                "",
                Some(1),
                4096,
                Err(
                    "exit status Some(1), output unreadable: EOF while parsing a value at line 1 column 0",
                ),
            ),
            (
                "",
                None,
                4096,
                Err(
                    "exit status None, output unreadable: EOF while parsing a value at line 1 column 0",
                ),
            ),
        ] {
            assert_eq!(
                parse_check(json.as_bytes(), code, file_len),
                want.map_err(str::to_string),
                "{json}"
            );
        }
    }
}
