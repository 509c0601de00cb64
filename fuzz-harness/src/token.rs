//! `token`: the std adapter's token-file reader and JWT `exp` extraction on arbitrary bytes.
//!
//! Invariants: no panic; [`TokenFile::load`] answers the file's bytes with trailing ASCII
//! whitespace trimmed, or an error whose `Display` and `Debug` text never contain the token;
//! [`jwt_expiry`] answers a value or `None`, for raw strings and for any payload wrapped in a
//! well-formed JWT.

use std::path::PathBuf;
use std::sync::OnceLock;

use satmqtt_std::token::{jwt_expiry, TokenFile, MAX_TOKEN_LEN};

/// One directory per process: libFuzzer runs millions of inputs, each rewrites the same file.
fn token_path() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("create a temporary directory"))
        .path()
        .join("token")
}

/// Runs every check on `data`; panics on a broken invariant.
pub fn run(data: &[u8]) {
    let path = token_path();
    std::fs::write(&path, data).expect("write the token file");
    let file = TokenFile::new(&path);
    let trimmed_len = data
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    let token = &data[..trimmed_len];
    match file.load() {
        Ok(t) => {
            assert_eq!(
                t.as_str().as_bytes(),
                token,
                "the token is not the trimmed file"
            );
            assert!(!t.is_empty() && t.len() <= MAX_TOKEN_LEN);
            assert_eq!(format!("{t:?}"), format!("Token(<{} bytes>)", t.len()));
            if let Some(times) = jwt_expiry(t.as_str()) {
                let _ = times.exp;
            }
        }
        Err(e) => {
            let expected_error = token.is_empty()
                || token.len() > MAX_TOKEN_LEN
                || std::str::from_utf8(token).is_err();
            assert!(expected_error, "a valid token was refused: {e}");
            assert!(!e.to_string().is_empty());
            if !token.is_empty() {
                // The path is ours and may coincide with short tokens; the rest must not.
                let p = path.display().to_string();
                for text in [e.to_string(), format!("{e:?}")] {
                    let text = text.replace(&p, "");
                    assert!(
                        !contains(text.as_bytes(), token),
                        "the error shows the token: {text}"
                    );
                }
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = jwt_expiry(s);
        // Arbitrary claims inside a well-formed JWT reach the JSON and NumericDate code.
        let jwt = format!("{}.{}.sig", b64url(br#"{"alg":"RS256"}"#), b64url(data));
        let _ = jwt_expiry(&jwt);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
