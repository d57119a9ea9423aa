//! Hostname normalisation, validation and the project-label route. The
//! input is a Host header and a base domain, split at the first NUL.
//! Invariants: a name that validates is canonical (validating it again
//! gives itself, normalising it changes nothing) and is made only of
//! lowercase letters, digits, hyphens and dots (after an optional `*.`);
//! a project label is one non-empty DNS label that, joined to the base
//! domain, gives back exactly the host.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::hostname::{Hostname, normalize, project_label, wildcard_for};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, base) = text.split_once('\0').unwrap_or((text, "apps.example.com"));

    if let Ok(name) = Hostname::parse(raw) {
        let s = name.as_str();
        assert_eq!(normalize(s), s);
        assert_eq!(Hostname::parse(s).as_ref(), Ok(&name));
        let rest = s.strip_prefix("*.").unwrap_or(s);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{s}"
        );
        assert!(s.len() <= 253);
        if let Some(wildcard) = wildcard_for(rest) {
            let parsed = Hostname::parse(&wildcard).expect("the wildcard of a valid name is valid");
            assert!(parsed.is_wildcard());
        }
    }

    let host = normalize(raw);
    let Ok(base) = Hostname::parse(base) else {
        return;
    };
    if let Some(label) = project_label(&host, base.as_str()) {
        assert!(!label.is_empty() && !label.contains('.'), "{label}");
        assert_eq!(format!("{label}.{base}"), host);
    }
});
