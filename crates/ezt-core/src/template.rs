//! `{{…}}` placeholders as text: finding them and masking them (for checking the shape of the
//! text around them). What a placeholder means and how its value is encoded is decided where it
//! is rendered (`workflow`).

/// Replaces every `{{…}}` by `x`, for checking the shape of a template (and, since the host
/// is never templated, for finding a step's lane).
pub fn mask(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(a) = rest.find("{{") {
        out.push_str(&rest[..a]);
        match rest[a..].find("}}") {
            Some(b) => {
                out.push('x');
                rest = &rest[a + b + 2..];
            }
            None => {
                out.push_str(&rest[a..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{{…}}` expressions of a string, trimmed.
pub(crate) fn templates(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(a) = rest.find("{{") {
        let Some(b) = rest[a..].find("}}") else { break };
        out.push(rest[a + 2..a + b].trim().to_string());
        rest = &rest[a + b + 2..];
    }
    out
}

/// The templated texts of a job object (url, header values, body) as given, before masking.
#[derive(Debug, Default)]
pub(crate) struct Raw {
    url: Option<String>,
    body: Option<String>,
    headers: std::collections::BTreeMap<String, String>,
}

/// Masks the placeholders of a job object's url, header values and body (so the job's own
/// checks see plain text) and answers the texts as given, for [`Raw::restore`].
pub(crate) fn mask_job(o: &mut serde_json::Map<String, serde_json::Value>) -> Raw {
    use serde_json::Value;
    let mut raw = Raw::default();
    for (field, slot) in [("url", &mut raw.url), ("body", &mut raw.body)] {
        if let Some(Value::String(s)) = o.get_mut(field) {
            if s.contains("{{") {
                *slot = Some(s.clone());
                *s = mask(s);
            }
        }
    }
    if let Some(Value::Object(h)) = o.get_mut("headers") {
        for (k, v) in h.iter_mut() {
            if let Value::String(s) = v {
                if s.contains("{{") {
                    raw.headers.insert(k.clone(), s.clone());
                    *s = mask(s);
                }
            }
        }
    }
    raw
}

impl Raw {
    /// Puts the texts as given back into the checked job's fields.
    pub(crate) fn restore(
        self,
        url: &mut String,
        headers: &mut [(String, String)],
        body: &mut Option<String>,
    ) {
        if let Some(u) = self.url {
            *url = u;
        }
        if let Some(b) = self.body {
            *body = Some(b);
        }
        for (n, v) in headers.iter_mut() {
            if let Some(r) = self.headers.get(n) {
                *v = r.clone();
            }
        }
    }
}
