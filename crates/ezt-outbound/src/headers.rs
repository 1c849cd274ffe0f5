//! Header handling.

/// Response headers as (name, value) pairs, values decoded lossily.
pub fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_are_not_utf8_are_kept_lossily() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "5".parse().unwrap());
        h.insert(
            "x-odd",
            reqwest::header::HeaderValue::from_bytes(b"a\xffb").unwrap(),
        );
        let pairs = header_pairs(&h);
        assert!(
            pairs.contains(&("retry-after".into(), "5".into())),
            "{pairs:?}"
        );
        assert!(
            pairs.contains(&("x-odd".into(), "a\u{fffd}b".into())),
            "{pairs:?}"
        );
    }
}
