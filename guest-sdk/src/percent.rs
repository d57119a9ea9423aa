//! Percent-decoding for paths and query strings (RFC 3986), without a
//! dependency: a guest pays for every byte of code it ships.

/// Decodes `%XX` escapes; with `plus_is_space`, `+` becomes a space (the
/// `application/x-www-form-urlencoded` rule for query strings). Malformed
/// escapes are kept as they are, and invalid UTF-8 is replaced, so decoding
/// never fails.
pub(crate) fn decode(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(decode("a%20b", false), "a b");
        assert_eq!(decode("a+b", true), "a b");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("%E2%9C%93", false), "✓");
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(decode("100%", false), "100%");
        assert_eq!(decode("%zz", false), "%zz");
        assert_eq!(decode("%4", false), "%4");
        assert_eq!(decode("%ff", false), "\u{fffd}");
    }
}
