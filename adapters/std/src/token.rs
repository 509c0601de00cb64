//! The projected service-account token file, and the JWT times used to rotate before expiry.
//!
//! The kubelet writes a projected volume atomically: a timestamped folder, a `..data` symlink to
//! it, and `mqtt-client-token -> ..data/mqtt-client-token`. Opening the path follows both links,
//! so each [`TokenFile::load`] sees either the old or the new token, never half of one.
//!
//! The token is a bearer credential: it is only ever held in zeroized buffers, and neither
//! [`Token`], [`TokenError`] nor [`TokenHint`] prints it.
//!
//! Only a regular file (after following the links) is opened: a FIFO would block `open(2)`
//! until a writer appeared, and no signal would end the wait. The file is opened non-blocking
//! as well, for a file swapped for a FIFO between the check and the open.

use std::fmt;
use std::fs::{FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

/// The longest token accepted: an MQTT password is a binary field with a 16-bit length.
pub const MAX_TOKEN_LEN: usize = 65_535;

/// Room for trailing whitespace (an editor's newline) on top of [`MAX_TOKEN_LEN`], so a maximal
/// token followed by a newline is still read rather than refused by its file size.
const TRAILING_WHITESPACE_ALLOWANCE: usize = 1024;

const READ_LIMIT: usize = MAX_TOKEN_LEN + TRAILING_WHITESPACE_ALLOWANCE;

/// Called with the token file's path and what looks wrong with a token just read.
pub type HintReport = dyn Fn(&Path, &[TokenHint]) + Send + Sync;

/// A token file path; [`TokenFile::load`] reads it afresh each time.
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
    report: Option<Arc<HintReport>>,
    /// The hints last reported, so a token read before every attempt is reported once.
    reported: Arc<Mutex<Vec<TokenHint>>>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TokenFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for TokenFile {}

impl TokenFile {
    /// A token file at `path` (usually `/var/run/secrets/tokens/mqtt-client-token`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            report: None,
            reported: Arc::default(),
        }
    }

    /// Calls `report` when a loaded token has [`hints`] (a BOM, whitespace, not a JWT): once
    /// per distinct finding, however often the same token is read. The token is used anyway;
    /// it is the broker's to refuse.
    pub fn with_hint_report(
        mut self,
        report: impl Fn(&Path, &[TokenHint]) + Send + Sync + 'static,
    ) -> Self {
        self.report = Some(Arc::new(report));
        self
    }

    /// The path as given, before symlinks are followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks the current token: a regular file, trailing ASCII whitespace trimmed,
    /// non-empty, at most [`MAX_TOKEN_LEN`] bytes, UTF-8.
    pub fn load(&self) -> Result<Token, TokenError> {
        let token = self.read()?;
        if let Some(report) = &self.report {
            let found = hints(token.as_str());
            let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            if *reported != found {
                if !found.is_empty() {
                    report(&self.path, &found);
                }
                *reported = found;
            }
        }
        Ok(token)
    }

    fn read(&self) -> Result<Token, TokenError> {
        let path = || self.path.clone();
        let unreadable = |source| TokenError::Unreadable {
            path: path(),
            source,
        };
        let not_found_or = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => TokenError::NotFound { path: path() },
            _ => unreadable(source),
        };
        let not_regular = |kind: FileType| TokenError::NotRegular {
            path: path(),
            kind: file_kind(kind),
        };
        let kind = std::fs::metadata(&self.path)
            .map_err(not_found_or)?
            .file_type();
        if !kind.is_file() {
            return Err(not_regular(kind));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&self.path)
            .map_err(not_found_or)?;
        let metadata = file.metadata().map_err(unreadable)?;
        if !metadata.is_file() {
            return Err(not_regular(metadata.file_type()));
        }
        let file_len = metadata.len();
        if file_len > READ_LIMIT as u64 {
            return Err(TokenError::TooLarge {
                path: path(),
                len: usize::try_from(file_len).unwrap_or(usize::MAX),
            });
        }

        // Allocated once at full size and never grown: a reallocation would leave a copy of the
        // token behind that nothing zeroes. One spare byte detects a file that grew meanwhile.
        let mut bytes = Zeroizing::new(vec![0u8; READ_LIMIT + 1]);
        let mut filled = 0;
        while filled < bytes.len() {
            match file.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unreadable(e)),
            }
        }
        if filled > READ_LIMIT {
            return Err(TokenError::TooLarge {
                path: path(),
                len: filled,
            });
        }

        let len = bytes[..filled]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        // The dropped tail is zeroed with the rest of the allocation when `bytes` is dropped.
        bytes.truncate(len);
        if len == 0 {
            return Err(TokenError::Empty { path: path() });
        }
        if len > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge { path: path(), len });
        }

        // Moves the allocation, without copying, into the String (or back out of the error).
        match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(text) => Ok(Token(Zeroizing::new(text))),
            Err(e) => {
                let valid_up_to = e.utf8_error().valid_up_to();
                e.into_bytes().zeroize();
                Err(TokenError::NotUtf8 {
                    path: path(),
                    valid_up_to,
                })
            }
        }
    }
}

/// A loaded token, zeroed on drop. Its `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token text, to be sent as the MQTT password.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for a token from [`TokenFile::load`]; here for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.len())
    }
}

/// Why a token file could not be used. Names the path, never the content.
#[derive(Debug)]
pub enum TokenError {
    /// The file (or a symlink on the way to it) does not exist.
    NotFound {
        /// The token file path.
        path: PathBuf,
    },
    /// Not a regular file after following symlinks (a directory, a FIFO, a device, a socket).
    NotRegular {
        /// The token file path.
        path: PathBuf,
        /// What it is instead, in words.
        kind: &'static str,
    },
    /// Opening or reading failed (permission, an I/O error).
    Unreadable {
        /// The token file path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Nothing left after trimming trailing whitespace.
    Empty {
        /// The token file path.
        path: PathBuf,
    },
    /// More than [`MAX_TOKEN_LEN`] bytes (the file size, or the trimmed token).
    TooLarge {
        /// The token file path.
        path: PathBuf,
        /// The size found, in bytes.
        len: usize,
    },
    /// The token is not UTF-8.
    NotUtf8 {
        /// The token file path.
        path: PathBuf,
        /// Offset of the first invalid byte.
        valid_up_to: usize,
    },
}

impl TokenError {
    /// The token file path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::NotRegular { path, .. }
            | Self::Unreadable { path, .. }
            | Self::Empty { path }
            | Self::TooLarge { path, .. }
            | Self::NotUtf8 { path, .. } => path,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token file {}: ", self.path().display())?;
        match self {
            Self::NotFound { .. } => f.write_str("not found"),
            Self::NotRegular { kind, .. } => {
                write!(f, "{kind}, not a regular file; refusing to open it")
            }
            Self::Unreadable { source, .. } => write!(f, "cannot read: {source}"),
            Self::Empty { .. } => f.write_str("empty (0 bytes after trimming whitespace)"),
            Self::TooLarge { len, .. } => write!(
                f,
                "{len} bytes, more than the {MAX_TOKEN_LEN} an MQTT password can hold"
            ),
            Self::NotUtf8 { valid_up_to, .. } => {
                write!(f, "not UTF-8 (invalid byte at offset {valid_up_to})")
            }
        }
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn file_kind(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Something in a token that a broker will likely refuse; named by its byte offset in the file,
/// never by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHint {
    /// A UTF-8 byte order mark (U+FEFF), as some editors write at the start.
    ByteOrderMark {
        /// Byte offset in the file.
        offset: usize,
    },
    /// Whitespace before the token.
    LeadingWhitespace,
    /// Whitespace inside the token, such as a line break in a pasted token.
    InnerWhitespace {
        /// Byte offset in the file of the first one.
        offset: usize,
    },
    /// Not a compact JWT (`header.payload.signature`, base64url JSON): used as is, with no
    /// renewal before its `exp`.
    NotJwt,
}

impl fmt::Display for TokenHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ByteOrderMark { offset } => {
                write!(f, "a UTF-8 byte order mark at byte offset {offset}")
            }
            Self::LeadingWhitespace => f.write_str("whitespace at byte offset 0, before the token"),
            Self::InnerWhitespace { offset } => {
                write!(f, "whitespace inside the token at byte offset {offset}")
            }
            Self::NotJwt => f.write_str(
                "not a JWT (header.payload.signature); sent as is, without renewal before expiry",
            ),
        }
    }
}

/// What looks wrong with `token` (trailing whitespace is trimmed on reading, so it is not here).
/// "Not a JWT" is only said when nothing else explains it.
pub fn hints(token: &str) -> Vec<TokenHint> {
    let mut found = Vec::new();
    if let Some(offset) = token.find('\u{feff}') {
        found.push(TokenHint::ByteOrderMark { offset });
    }
    let mut spaces = token.char_indices().filter(|(_, c)| c.is_whitespace());
    match spaces.next() {
        Some((0, _)) => {
            found.push(TokenHint::LeadingWhitespace);
            // The first whitespace after the leading run, if any.
            let lead = token.len() - token.trim_start().len();
            if let Some((offset, _)) = spaces.find(|(i, _)| *i >= lead) {
                found.push(TokenHint::InnerWhitespace { offset });
            }
        }
        Some((offset, _)) => found.push(TokenHint::InnerWhitespace { offset }),
        None => {}
    }
    if found.is_empty() && jwt_expiry(token).is_none() {
        found.push(TokenHint::NotJwt);
    }
    found
}

/// The times a JWT's payload states, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtTimes {
    /// `exp`: when the token expires.
    pub exp: Option<u64>,
    /// `iat`: when the token was issued.
    pub iat: Option<u64>,
}

/// base64url as JWTs use it (RFC 7515 says unpadded; padded input is accepted too).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads `exp` and `iat` from a compact JWS (`header.payload.signature`); `None` if `token` is
/// not one. The signature is not checked: the broker verifies the token, this only tells the
/// caller when to rotate.
pub fn jwt_expiry(token: &str) -> Option<JwtTimes> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    json_object(header)?;
    let claims = json_object(payload)?;
    Some(JwtTimes {
        exp: claims.get("exp").and_then(numeric_date),
        iat: claims.get("iat").and_then(numeric_date),
    })
}

fn json_object(part: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = Zeroizing::new(BASE64URL.decode(part).ok()?);
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// RFC 7519 NumericDate: seconds, possibly fractional; negative or non-numeric is ignored.
fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const SECRET: &str = "s3cr3t-DISTINCTIVE-t0ken";

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> TokenFile {
        let path = dir.path().join(name);
        fs::write(&path, content).expect("write token file");
        TokenFile::new(path)
    }

    fn assert_hides_secret(text: &str) {
        assert!(!text.contains(SECRET), "leaks the token: {text}");
        assert!(
            !text.contains("DISTINCTIVE"),
            "leaks part of the token: {text}"
        );
    }

    #[test]
    fn trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", format!("{SECRET}\n").as_bytes());
        let token = file.load().expect("load");
        assert_eq!(token.as_str(), SECRET);
        assert_eq!(token.len(), SECRET.len());
        assert!(!token.is_empty());
    }

    #[test]
    fn only_trailing_ascii_whitespace_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", b" a b\r\n\t \n");
        assert_eq!(file.load().expect("load").as_str(), " a b");
    }

    #[test]
    fn same_file_loads_equal_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", b"one\n");
        assert_eq!(file.load().expect("load"), file.load().expect("load"));
        fs::write(file.path(), b"two\n").expect("rewrite");
        let two = file.load().expect("load");
        assert_ne!(two, write(&dir, "other", b"one").load().expect("load"));
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mqtt-client-token");
        let e = TokenFile::new(&path).load().expect_err("missing");
        assert!(matches!(&e, TokenError::NotFound { path: p } if *p == path));
        assert_eq!(
            e.to_string(),
            format!("token file {}: not found", path.display())
        );
    }

    #[test]
    fn dangling_symlink_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mqtt-client-token");
        symlink("..data/mqtt-client-token", &path).expect("symlink");
        let e = TokenFile::new(&path).load().expect_err("dangling");
        assert!(matches!(e, TokenError::NotFound { .. }), "{e:?}");
    }

    #[test]
    fn empty_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", b"");
        let e = file.load().expect_err("empty");
        assert!(matches!(e, TokenError::Empty { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "token file {}: empty (0 bytes after trimming whitespace)",
                file.path().display()
            )
        );
    }

    #[test]
    fn whitespace_only_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", b"\n \t\r\n");
        assert!(matches!(file.load(), Err(TokenError::Empty { .. })));
    }

    #[test]
    fn huge_file_is_refused_by_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", &vec![b'a'; 70_000]);
        let e = file.load().expect_err("too large");
        assert!(
            matches!(e, TokenError::TooLarge { len: 70_000, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "token file {}: 70000 bytes, more than the 65535 an MQTT password can hold",
                file.path().display()
            )
        );
    }

    #[test]
    fn token_one_byte_over_the_limit_is_too_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(&dir, "token", &vec![b'a'; MAX_TOKEN_LEN + 1]);
        let e = file.load().expect_err("too large");
        assert!(
            matches!(e, TokenError::TooLarge { len: 65_536, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn token_at_the_limit_with_a_newline_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut content = vec![b'a'; MAX_TOKEN_LEN];
        content.push(b'\n');
        let file = write(&dir, "token", &content);
        assert_eq!(file.load().expect("load").len(), MAX_TOKEN_LEN);
    }

    #[test]
    fn invalid_utf8_reports_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut content = SECRET.as_bytes().to_vec();
        content.extend_from_slice(b"\xff rest\n");
        let file = write(&dir, "token", &content);
        let e = file.load().expect_err("not utf-8");
        assert!(
            matches!(e, TokenError::NotUtf8 { valid_up_to, .. } if valid_up_to == SECRET.len()),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "token file {}: not UTF-8 (invalid byte at offset 24)",
                file.path().display()
            )
        );
        assert_hides_secret(&e.to_string());
        assert_hides_secret(&format!("{e:?}"));
    }

    #[test]
    fn a_directory_is_refused_as_not_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = TokenFile::new(dir.path()).load().expect_err("directory");
        assert!(
            matches!(
                e,
                TokenError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "token file {}: a directory, not a regular file; refusing to open it",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_in_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).expect("mkfifo");
        // Through a kubelet-style symlink: the type is checked after following it.
        let link = dir.path().join("mqtt-client-token");
        symlink(&fifo, &link).expect("symlink");
        // Returns at all: opening a FIFO for reading with no writer would block here.
        let e = TokenFile::new(&link).load().expect_err("fifo");
        assert!(matches!(e, TokenError::NotRegular { .. }), "{e:?}");
        assert!(e.to_string().contains("a FIFO (named pipe)"), "{e}");
        assert!(e.to_string().contains(&link.display().to_string()), "{e}");
    }

    #[test]
    fn hints_name_offsets_and_kinds_only() {
        let jwt = format!("{HEADER}.{PAYLOAD}.c2lnbmF0dXJl");
        assert_eq!(hints(&jwt), []);
        assert_eq!(hints(SECRET), [TokenHint::NotJwt]);
        assert_eq!(
            hints(&format!("\u{feff}{jwt}")),
            [TokenHint::ByteOrderMark { offset: 0 }]
        );
        assert_eq!(hints(&format!(" {jwt}")), [TokenHint::LeadingWhitespace]);
        assert_eq!(
            hints(&format!("{HEADER}.{PAYLOAD}\n.c2ln")),
            [TokenHint::InnerWhitespace {
                offset: HEADER.len() + 1 + PAYLOAD.len()
            }]
        );
        assert_eq!(
            hints(&format!("  {HEADER} x")),
            [
                TokenHint::LeadingWhitespace,
                TokenHint::InnerWhitespace {
                    offset: 2 + HEADER.len()
                }
            ]
        );
        for hint in hints(&format!(" {SECRET}\n{SECRET}")) {
            assert_hides_secret(&hint.to_string());
            assert_hides_secret(&format!("{hint:?}"));
        }
    }

    #[test]
    fn hints_are_reported_once_per_finding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let file = TokenFile::new(&path).with_hint_report(move |p, found| {
            sink.lock()
                .expect("lock")
                .push((p.to_owned(), found.to_vec()));
        });
        fs::write(&path, " not-a-jwt\n").expect("write");
        file.load().expect("load");
        file.load().expect("load");
        fs::write(&path, format!("{HEADER}.{PAYLOAD}.c2ln")).expect("write");
        file.load().expect("load");
        fs::write(&path, "\u{feff}x").expect("write");
        file.load().expect("load");
        let seen = seen.lock().expect("lock");
        assert_eq!(
            *seen,
            [
                (path.clone(), vec![TokenHint::LeadingWhitespace]),
                (path.clone(), vec![TokenHint::ByteOrderMark { offset: 0 }]),
            ]
        );
    }

    #[test]
    fn kubelet_symlink_layout_is_followed_across_an_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let first = root.join("..2026_01_01_00_00_00.1");
        fs::create_dir(&first).expect("mkdir");
        fs::write(first.join("mqtt-client-token"), "first-token\n").expect("write");
        symlink("..2026_01_01_00_00_00.1", root.join("..data")).expect("..data");
        symlink("..data/mqtt-client-token", root.join("mqtt-client-token")).expect("link");

        let file = TokenFile::new(root.join("mqtt-client-token"));
        let before = file.load().expect("load");
        assert_eq!(before.as_str(), "first-token");

        // What the kubelet does on rotation: new folder, new link, rename over `..data`.
        let second = root.join("..2026_01_01_01_00_00.2");
        fs::create_dir(&second).expect("mkdir");
        fs::write(second.join("mqtt-client-token"), "second-token\n").expect("write");
        symlink("..2026_01_01_01_00_00.2", root.join("..data_tmp")).expect("..data_tmp");
        fs::rename(root.join("..data_tmp"), root.join("..data")).expect("rename");

        let after = file.load().expect("load");
        assert_eq!(after.as_str(), "second-token");
        assert_ne!(before, after);
    }

    #[test]
    fn token_debug_shows_only_the_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = write(&dir, "token", SECRET.as_bytes())
            .load()
            .expect("load");
        assert_eq!(format!("{token:?}"), "Token(<24 bytes>)");
        assert_eq!(format!("{token:#?}"), "Token(<24 bytes>)");
    }

    #[test]
    fn errors_never_show_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut too_long = SECRET.repeat(MAX_TOKEN_LEN / SECRET.len() + 1).into_bytes();
        too_long.push(b'\n');
        let mut not_utf8 = SECRET.as_bytes().to_vec();
        not_utf8.push(0xc3);
        let errors = [
            write(&dir, "long", &too_long).load().expect_err("long"),
            write(&dir, "bad", &not_utf8).load().expect_err("utf-8"),
        ];
        for e in &errors {
            assert_hides_secret(&e.to_string());
            assert_hides_secret(&format!("{e:?}"));
            assert_hides_secret(&format!("{e:#?}"));
        }
    }

    const HEADER: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"; // {"alg":"RS256","kid":"k1"}
                                                                // {"aud":["azedge-dmqtt"],"exp":1700000000,"iat":1699913600}
    const PAYLOAD: &str =
        "eyJhdWQiOlsiYXplZGdlLWRtcXR0Il0sImV4cCI6MTcwMDAwMDAwMCwiaWF0IjoxNjk5OTEzNjAwfQ";

    #[test]
    fn jwt_times_are_read_from_the_payload() {
        let jwt = format!("{HEADER}.{PAYLOAD}.c2lnbmF0dXJl");
        assert_eq!(
            jwt_expiry(&jwt),
            Some(JwtTimes {
                exp: Some(1_700_000_000),
                iat: Some(1_699_913_600),
            })
        );
    }

    #[test]
    fn padded_base64url_is_accepted() {
        let jwt = format!("{HEADER}=.{PAYLOAD}==.c2lnbmF0dXJl");
        assert_eq!(jwt_expiry(&jwt).and_then(|t| t.exp), Some(1_700_000_000));
    }

    #[test]
    fn jwt_without_times_has_none() {
        // {"sub":"system:serviceaccount:ns:sa"}
        let jwt = format!("{HEADER}.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6c2EifQ.c2ln");
        assert_eq!(
            jwt_expiry(&jwt),
            Some(JwtTimes {
                exp: None,
                iat: None
            })
        );
    }

    #[test]
    fn fractional_numeric_dates_are_truncated() {
        let payload = BASE64URL.encode(br#"{"exp":1700000000.9,"iat":-5}"#);
        let jwt = format!("{HEADER}.{payload}.c2ln");
        assert_eq!(
            jwt_expiry(&jwt),
            Some(JwtTimes {
                exp: Some(1_700_000_000),
                iat: None
            })
        );
    }

    #[test]
    fn non_jwts_have_no_times() {
        let array = BASE64URL.encode(b"[1700000000]");
        for token in [
            "",
            SECRET,
            "a.b",
            "a.b.c",
            &format!("{HEADER}.{PAYLOAD}"),
            &format!("{HEADER}.{PAYLOAD}.sig.extra"),
            &format!("{HEADER}.!!!.c2ln"),
            &format!("{HEADER}.{array}.c2ln"),
            &format!("bm90IGpzb24.{PAYLOAD}.c2ln"), // header "not json"
        ] {
            assert_eq!(jwt_expiry(token), None, "{token}");
        }
    }
}
