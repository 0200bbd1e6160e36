//! Random bytes that never block. Early in a RAM-disk boot the kernel's
//! random pool is often not initialised yet (a VM without an RNG device or
//! RDRAND can take minutes), and getrandom(2) without flags blocks until it
//! is: the agent would hang before its first log line. Nothing the agent
//! randomises is a secret (its process id, jitter, GPT GUIDs, temp names;
//! tokens come from the server), so GRND_INSECURE is right.

use std::time::{SystemTime, UNIX_EPOCH};

/// getrandom(2)'s GRND_INSECURE (Linux 5.6+).
const GRND_INSECURE: libc::c_uint = 0x0004;

/// 16 random bytes, without waiting for the kernel's pool.
pub fn bytes16() -> [u8; 16] {
    let mut buf = [0u8; 16];
    // SAFETY: the buffer is valid for 16 bytes for the duration of the call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), GRND_INSECURE) };
    if n == buf.len() as isize {
        return buf;
    }
    // Older kernels: mix what differs between calls, processes and boots.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut x = now ^ (u128::from(std::process::id()) << 64) ^ u128::from(counter());
    for b in boot_id.bytes() {
        x = x.rotate_left(7) ^ u128::from(b).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    x.to_le_bytes()
}

fn counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A version-4 UUID from [`bytes16`].
pub fn uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(bytes16()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_differ() {
        let (a, b) = (uuid(), uuid());
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
    }
}
