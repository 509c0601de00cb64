//! Service-account tokens: a kubelet-style projected-volume directory, and JWT-shaped fakes.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tempfile::TempDir;

use crate::tools::{random_bytes, random_hex};

/// The file name the pod's projected volume exposes (`serviceAccountToken.path`).
pub const TOKEN_FILE_NAME: &str = "mqtt-client-token";

/// A directory laid out the way the kubelet writes a projected volume:
///
/// ```text
/// ..2025_01_02_15_04_05.123456789/mqtt-client-token   the data
/// ..data -> ..2025_01_02_15_04_05.123456789           swapped atomically on every update
/// mqtt-client-token -> ..data/mqtt-client-token       the path the pod reads
/// ```
///
/// [`TokenDir::write`] follows the kubelet's `AtomicWriter`: write a new timestamped directory, point
/// a fresh `..data_tmp` symlink at it, `rename` that over `..data` (atomic), then delete the old
/// directory. A reader that opened the old file keeps its content; a reader that opens the path after
/// the rename sees the new one; nobody sees a half-written token.
pub struct TokenDir {
    dir: TempDir,
}

impl TokenDir {
    /// An empty projected-volume directory (no token yet: [`TokenDir::path`] does not exist).
    pub fn new() -> TokenDir {
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-token-")
            .tempdir()
            .expect("creating the token temp dir");
        TokenDir { dir }
    }

    /// The projected volume's mount point.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The token path a pod is configured with (`<dir>/mqtt-client-token`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(TOKEN_FILE_NAME)
    }

    /// Publishes `token` as the volume's new content, atomically, exactly as written (no newline
    /// added).
    pub fn write(&self, token: &str) {
        let root = self.dir.path();
        let data_link = root.join("..data");
        let old_target = fs::read_link(&data_link).ok();

        // 1. The new payload, in a fresh timestamped directory.
        let ts_name = format!(
            "..{}.{}",
            utc_timestamp(SystemTime::now()),
            random_digits(9)
        );
        let ts_dir = root.join(&ts_name);
        fs::create_dir(&ts_dir).expect("creating the timestamped token dir");
        fs::write(ts_dir.join(TOKEN_FILE_NAME), token).expect("writing the token");

        // 2. A new `..data_tmp` symlink to it, renamed over `..data`.
        let tmp_link = root.join("..data_tmp");
        let _ = fs::remove_file(&tmp_link);
        symlink(&ts_name, &tmp_link).expect("creating ..data_tmp");
        fs::rename(&tmp_link, &data_link).expect("renaming ..data_tmp over ..data");

        // 3. The user-visible symlink, created once.
        let visible = self.path();
        if fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new("..data").join(TOKEN_FILE_NAME), &visible)
                .expect("creating the token symlink");
        }

        // 4. The previous payload goes away.
        if let Some(old) = old_target {
            let _ = fs::remove_dir_all(root.join(old));
        }
    }
}

impl Default for TokenDir {
    fn default() -> Self {
        TokenDir::new()
    }
}

/// A JWT-shaped token like a projected service-account token for audience `azedge-dmqtt`.
///
/// The header is `{"alg":"RS256","typ":"JWT"}`; the payload has `aud`, `iat`, `exp = now +
/// exp_offset_secs` (negative: already expired), `sub`, and a random `jti`; the signature part is 256
/// random bytes (the size of an RS256 signature), so every token is distinctive and a test can grep
/// output for it (see [`secret_fragments`]). The signature is not valid: brokers in these tests
/// check the token as a password, not as a JWT.
pub fn fake_jwt(exp_offset_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let header = r#"{"alg":"RS256","typ":"JWT"}"#;
    let claims = serde_json::json!({
        "aud": ["azedge-dmqtt"],
        "exp": now + exp_offset_secs,
        "iat": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": format!("satmqtt-test-{}", random_hex(24)),
        "sub": "system:serviceaccount:default:mqtt-client",
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(random_bytes(256))
    )
}

/// The `exp` claim (unix seconds) of a JWT-shaped token such as [`fake_jwt`]'s; `None` if it has none.
pub fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("exp")?.as_i64()
}

/// Pieces of `token` that must never appear in any output.
///
/// For a JWT: the whole token, its payload part and every 16-character window of its signature part
/// (so a truncated print is caught too). The header part is left out: it is the same public string
/// in every RS256 token. For any other token: the whole token and its 16-character windows.
pub fn secret_fragments(token: &str) -> Vec<String> {
    const WINDOW: usize = 16;
    let windows = |s: &str| -> Vec<String> {
        if s.len() <= WINDOW {
            return vec![s.to_string()];
        }
        (0..=s.len() - WINDOW)
            .filter_map(|i| s.get(i..i + WINDOW))
            .map(str::to_string)
            .collect()
    };
    let mut fragments = vec![token.to_string()];
    match token.split('.').collect::<Vec<_>>()[..] {
        [_header, payload, signature] => {
            fragments.push(payload.to_string());
            fragments.extend(windows(signature));
        }
        _ => fragments.extend(windows(token)),
    }
    fragments.retain(|f| !f.is_empty());
    fragments
}

/// Panics if any of `token`'s [`secret_fragments`] occurs in `output`. The panic message names
/// `what` and the position, never the token.
#[track_caller]
pub fn assert_no_token_leak(what: &str, output: &str, token: &str) {
    for fragment in secret_fragments(token) {
        if let Some(at) = output.find(&fragment) {
            let line = output[..at].lines().count().max(1);
            panic!(
                "{what} contains {} characters of the token at line {line} (byte {at}); \
                 the token must never be printed",
                fragment.len()
            );
        }
    }
}

fn random_digits(n: usize) -> String {
    random_bytes(n)
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, the kubelet's timestamp directory format.
fn utc_timestamp(t: SystemTime) -> String {
    // `YYYY-MM-DDTHH:MM:SSZ` with the kubelet's separators.
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    rfc3339.trim_end_matches('Z').replace(['-', 'T', ':'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970_01_01_00_00_00");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_timestamp(t), "2000_02_29_01_02_03");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(utc_timestamp(t), "2024_12_31_23_59_59");
    }

    #[test]
    fn token_dir_has_the_kubelet_layout() {
        let tokens = TokenDir::new();
        assert!(!tokens.path().exists());
        tokens.write("first");
        let data = fs::read_link(tokens.dir().join("..data")).unwrap();
        let data = data.to_str().unwrap();
        assert!(data.starts_with("..") && data.len() == "..2025_01_02_15_04_05.123456789".len());
        assert_eq!(
            fs::read_link(tokens.path()).unwrap(),
            Path::new("..data/mqtt-client-token")
        );
        assert_eq!(fs::read_to_string(tokens.path()).unwrap(), "first");
    }

    #[test]
    fn token_dir_update_swaps_data_and_removes_the_old_dir() {
        let tokens = TokenDir::new();
        tokens.write("first");
        let first = fs::read_link(tokens.dir().join("..data")).unwrap();
        tokens.write("second\n");
        let second = fs::read_link(tokens.dir().join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!tokens.dir().join(&first).exists());
        assert_eq!(fs::read_to_string(tokens.path()).unwrap(), "second\n");
        let mut names: Vec<String> = fs::read_dir(tokens.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![second.to_str().unwrap(), "..data", TOKEN_FILE_NAME]
        );
    }

    #[test]
    fn fake_jwt_is_a_distinctive_service_account_token() {
        let token = fake_jwt(600);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(claims["aud"], serde_json::json!(["azedge-dmqtt"]));
        assert_eq!(claims["sub"], "system:serviceaccount:default:mqtt-client");
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 600);
        assert_eq!(decode(parts[2]).len(), 256);
        assert_ne!(token, fake_jwt(600));
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    }

    #[test]
    fn leak_check_catches_truncated_prints_but_not_the_public_header() {
        let token = fake_jwt(60);
        let signature = token.rsplit('.').next().unwrap();
        let header = token.split('.').next().unwrap();
        assert_no_token_leak("output", &format!("token header {header}"), &token);
        let truncated = format!("token={}...", &signature[40..60]);
        let caught =
            std::panic::catch_unwind(|| assert_no_token_leak("output", &truncated, &token));
        let message = *caught.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("output contains 16 characters of the token at line 1"));
        assert!(!message.contains(&signature[40..56]));
    }
}
