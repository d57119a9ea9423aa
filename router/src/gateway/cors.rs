//! Which browser origins may call a project's database gateway: the
//! project's `cors_origins` setting, exact origins or `*`.

use http::{HeaderMap, HeaderValue, header};

/// Most origins a project may list.
pub const MAX_ORIGINS: usize = 50;

/// How long browsers may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Checks a project's origins: `*`, or `http(s)://host[:port]` in
/// lowercase with no path — exactly what browsers send in `Origin`.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    if origins.len() > MAX_ORIGINS {
        return Err(format!("at most {MAX_ORIGINS} cors_origins"));
    }
    for origin in origins {
        if origin != "*" && !is_origin(origin) {
            let shown: String = origin.chars().take(100).collect();
            return Err(format!(
                "cors_origins: `{shown}` is not `*` or an origin like `https://app.example.com` (lowercase, no path)"
            ));
        }
    }
    Ok(())
}

fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// The request's `Origin`, if the project allows it.
pub fn allowed_origin<'a>(origins: &[String], headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    origins
        .iter()
        .any(|o| o == "*" || o == text)
        .then_some(origin)
}

/// Adds the headers that let the allowed `origin` read the response.
pub fn allow(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// Adds a preflight answer's headers for the allowed `origin`.
pub fn preflight(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    allow(headers, origin);
    if origin.is_some() {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        let ok =
            |list: &[&str]| check_origins(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["*", "https://app.example.com", "http://localhost:3000"]).is_ok());
        for bad in [
            "app.example.com",
            "https://App.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
            "https://x:0",
            "https://x:99999",
            "https://a b",
        ] {
            assert!(ok(&[bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..51).map(|i| format!("https://a{i}.example")).collect();
        assert!(check_origins(&many).is_err());
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let origins = vec!["https://app.example.com".to_string()];
        let mut headers = HeaderMap::new();
        assert!(allowed_origin(&origins, &headers).is_none());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(allowed_origin(&origins, &headers).is_none());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(allowed_origin(&origins, &headers).is_some());
        assert!(allowed_origin(&["*".to_string()], &headers).is_some());
    }
}
