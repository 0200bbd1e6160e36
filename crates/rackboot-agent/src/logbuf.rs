//! The agent's log: every line goes to stderr (the machine's console) with a
//! timestamp, and the last [`rackboot_agent_proto::MAX_LOG_BYTES`] are kept in
//! memory so a failed step can upload what led to it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rackboot_agent_proto::MAX_LOG_BYTES;

static TAIL: Mutex<LogTail> = Mutex::new(LogTail::new(MAX_LOG_BYTES));

/// A byte ring holding whole lines: the oldest lines are dropped first.
pub struct LogTail {
    limit: usize,
    bytes: VecDeque<u8>,
}

impl LogTail {
    pub const fn new(limit: usize) -> LogTail {
        LogTail {
            limit,
            bytes: VecDeque::new(),
        }
    }

    pub fn push_line(&mut self, line: &str) {
        let line = if line.len() + 1 > self.limit {
            // A single line longer than the whole tail keeps its end.
            let mut start = line.len() + 1 - self.limit;
            while !line.is_char_boundary(start) {
                start += 1;
            }
            &line[start..]
        } else {
            line
        };
        while self.bytes.len() + line.len() + 1 > self.limit {
            // Drop through the next newline so the tail starts at a line.
            match self.bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.bytes.drain(..=i);
                }
                None => self.bytes.clear(),
            }
        }
        self.bytes.extend(line.as_bytes());
        self.bytes.push_back(b'\n');
    }

    pub fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

/// `2026-05-01T12:00:00.123Z` from a Unix time, without a date library.
pub fn format_timestamp(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Logs one line (use the [`alog!`](crate::alog) macro).
pub fn log_line(message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!("{} rackboot-agent: {message}", format_timestamp(now));
    // The console may be gone or slow; a log line is never worth failing for.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    TAIL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_line(&line);
}

/// The retained tail of the log (at most `MAX_LOG_BYTES`), oldest line first.
pub fn tail() -> Vec<u8> {
    TAIL.lock().unwrap_or_else(|e| e.into_inner()).contents()
}

/// `alog!("erasing {}", path)`: a timestamped line on stderr and in the tail.
#[macro_export]
macro_rules! alog {
    ($($arg:tt)*) => {
        $crate::logbuf::log_line(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        for (secs, millis, want) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_777_636_800, 123, "2026-05-01T12:00:00.123Z"),
            (4_107_542_399, 999, "2100-02-28T23:59:59.999Z"),
        ] {
            let d = Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(format_timestamp(d), want);
        }
    }

    #[test]
    fn the_tail_keeps_whole_recent_lines() {
        let mut tail = LogTail::new(16);
        tail.push_line("first");
        tail.push_line("second");
        assert_eq!(tail.contents(), b"first\nsecond\n");
        tail.push_line("third");
        assert_eq!(tail.contents(), b"second\nthird\n");
        tail.push_line("a line far too long");
        assert_eq!(tail.contents(), b"ne far too long\n");
        tail.push_line("ééééééééé");
        assert_eq!(tail.contents(), "ééééééé\n".as_bytes());
        assert!(tail.contents().len() <= 16);
    }
}
