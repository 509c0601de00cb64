//! Value parsers for single settings: a value the publisher could only retry forever with is
//! refused at start-up (exit 2) with the flag and the limit, by clap like any other bad value.

use std::net::IpAddr;

/// A duration in milliseconds that must not be 0 (a 0 connect timeout gives up every attempt at
/// once; a 0 backoff reconnects without pause).
pub fn at_least_1_ms(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("0 ms is not allowed here; at least 1".to_owned()),
        Ok(ms) => Ok(ms),
        Err(e) => Err(format!("not a whole number of milliseconds ({e})")),
    }
}

/// A TCP port a client can connect to: 1 to 65535.
pub fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to; 1 to 65535".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err("not a TCP port; 1 to 65535".to_owned()),
    }
}

/// An IP address, or a DNS name (RFC 1123: labels of letters, digits, '-' and '_', 1 to 63
/// bytes each, at most 253 in all, not starting or ending with '-'). Underscores are let
/// through because some internal names carry them.
pub fn host(value: &str) -> Result<String, String> {
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() {
        return Err("empty; a host name or IP address is needed".to_owned());
    }
    if name.len() > 253 {
        return Err(format!("{} bytes; a host name has at most 253", name.len()));
    }
    if let Some((at, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} at byte {at} is not allowed in a host name (letters, digits, '-', '_' and \
             '.') and this is not an IP address"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("an empty label (\"..\", or a leading '.')".to_owned());
        }
        if label.len() > 63 {
            return Err(format!(
                "the label {label:?} is {} bytes; at most 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_addresses_pass() {
        for ok in [
            "localhost",
            "aio-broker",
            "aio-broker.azure-iot-operations.svc.cluster.local",
            "aio-broker.ns.",
            "10.0.0.1",
            "::1",
            "[::1]",
            "_internal.example",
            "1.2.3.4.nip.io",
        ] {
            assert!(host(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_hosts_say_what_is_wrong() {
        for (bad, says) in [
            ("a b", "' ' at byte 1"),
            ("", "empty"),
            ("a..b", "empty label"),
            ("-a", "starts or ends with '-'"),
            ("broker:1883", "':' at byte 6"),
            ("tab\there", "'\\t' at byte 3"),
        ] {
            let e = host(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(host(&"a".repeat(64))
            .expect_err("long label")
            .contains("at most 63"));
        let long = ["a"; 130].join(".");
        assert!(host(&long).expect_err("long name").contains("at most 253"));
    }

    #[test]
    fn zero_is_refused_where_it_cannot_work() {
        assert_eq!(port("1883"), Ok(1883));
        assert!(port("0").expect_err("0").contains("1 to 65535"));
        assert!(port("65536").is_err());
        assert_eq!(at_least_1_ms("1"), Ok(1));
        assert!(at_least_1_ms("0").expect_err("0").contains("at least 1"));
        assert!(at_least_1_ms("-1").is_err());
    }
}
