//! The signature receivers check: `X-Rackboot-Signature: sha256=<hex>`, the
//! HMAC-SHA256 under the webhook's secret of `"<timestamp>.<body>"`. Pure.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The `X-Rackboot-Signature` value for `body` sent at `timestamp` (Unix
/// seconds, the `X-Rackboot-Timestamp` value). The key is the secret's UTF-8
/// bytes as given (a generated secret is hex text; it is not decoded).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from `printf '%s' "$TS.$BODY" | openssl dgst -sha256 -hmac "$KEY"`
    /// (the long key from python3's hmac module).
    #[test]
    fn known_signatures() {
        let long_key = "k".repeat(100); // longer than SHA-256's block: hashed first
        let cases = [
            (
                "s3cret",
                1_700_000_000,
                r#"{"id":1}"#,
                "sha256=ee0658aa4e37018df69c24227df01e0f680eb3b87c7f1f9bd936e283cfe01d9b",
            ),
            (
                "",
                0,
                "",
                "sha256=b849d5a581847b281957065739df36df2463d1977ea8d6e1e4e6cf33fadc68c3",
            ),
            (
                long_key.as_str(),
                1,
                "x",
                "sha256=8dc72019a8a249d8f2d36e36fac06f4497511f4f50cfee8600a5d97fb8a91da5",
            ),
        ];
        for (key, ts, body, want) in cases {
            assert_eq!(signature(key, ts, body), want, "{key:?} {ts} {body:?}");
        }
    }
}
