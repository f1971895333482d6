//! Endpoint lists: `host:port` (or `http://host:port`), from code or from `NINES_ENDPOINTS`.

use crate::error::{Result, SdkError};

/// The environment variable [`crate::CheckpointClient::from_env`] reads: agents' `host:port`,
/// comma-separated.
pub const ENDPOINTS_ENV: &str = "NINES_ENDPOINTS";

/// Most endpoints a client accepts (a cluster is a handful of agents; more is a mistake).
pub const ENDPOINTS_MAX: usize = 64;

/// Check and normalize one endpoint to `host:port` (an `http://` prefix and a trailing `/` are
/// accepted and dropped).
pub fn normalize_endpoint(raw: &str) -> Result<String> {
    let s = raw.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    let bad = |why: &str| {
        SdkError::InvalidArgument(format!(
            "endpoint '{raw}' {why}; give host:port, e.g. 127.0.0.1:7101"
        ))
    };
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.contains("://") {
        return Err(bad("has a scheme other than http://"));
    }
    if s.contains('/') {
        return Err(bad("has a path"));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_string()),
        _ => Err(bad("has a port that is not a number in 1..=65535")),
    }
}

/// Check and normalize a list of endpoints, keeping their order and dropping duplicates.
pub fn normalize_endpoints<S: AsRef<str>>(raw: &[S]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for r in raw {
        let e = normalize_endpoint(r.as_ref())?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.is_empty() {
        return Err(SdkError::InvalidArgument(format!(
            "no endpoints given; pass agents' host:port (or set {ENDPOINTS_ENV})"
        )));
    }
    if out.len() > ENDPOINTS_MAX {
        return Err(SdkError::InvalidArgument(format!(
            "{} endpoints given, at most {ENDPOINTS_MAX} are accepted",
            out.len()
        )));
    }
    Ok(out)
}

/// Parse a comma-separated endpoint list such as `127.0.0.1:7101, 127.0.0.1:7102`.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = list.split(',').filter(|p| !p.trim().is_empty()).collect();
    normalize_endpoints(&parts)
}

/// The endpoints in `NINES_ENDPOINTS` (what the clients' `from_env` connect through).
pub(crate) fn env_endpoints() -> Result<Vec<String>> {
    let list = std::env::var(ENDPOINTS_ENV).map_err(|_| {
        SdkError::InvalidArgument(format!(
            "{ENDPOINTS_ENV} is not set; set it to the agents' host:port, comma-separated \
             (e.g. 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103)"
        ))
    })?;
    parse_endpoints(&list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_in_order_without_duplicates() {
        let eps =
            parse_endpoints(" 127.0.0.1:7101,http://127.0.0.1:7102/ ,,127.0.0.1:7101,n3:7103")
                .expect("valid list");
        assert_eq!(eps, ["127.0.0.1:7101", "127.0.0.1:7102", "n3:7103"]);
        assert_eq!(
            normalize_endpoint("[::1]:7101").expect("ipv6 literal"),
            "[::1]:7101"
        );
    }

    #[test]
    fn malformed_endpoints_are_invalid_arguments_that_say_why() {
        for (raw, why) in [
            ("", "is empty"),
            ("127.0.0.1", "has no port"),
            (":7101", "has no host"),
            ("host:0", "not a number"),
            ("host:http", "not a number"),
            ("https://host:7101", "scheme"),
            ("host:7101/x", "path"),
        ] {
            match normalize_endpoint(raw) {
                Err(SdkError::InvalidArgument(m)) => assert!(m.contains(why), "{raw}: {m}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_endpoints(" , "),
            Err(SdkError::InvalidArgument(_))
        ));
    }
}
