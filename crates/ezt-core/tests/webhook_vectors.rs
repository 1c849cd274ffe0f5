//! The shared webhook signature vectors (`testdata/webhook-signatures.json`, generated with
//! Python's hmac): the Rust signer must produce them byte for byte and the verifier must agree
//! on every accept/refuse case. Every SDK runs the same file.

use ezt_core::webhook::{self, VerifyError};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/webhook-signatures.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("json")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn signer_matches_every_vector() {
    let v = vectors();
    let cases = v["sign"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let secrets = strs(&c["secrets"]);
        let body = c["body"].as_str().unwrap().as_bytes();
        let t = c["timestamp"].as_u64().unwrap();
        let id = c["msg_id"].as_str().unwrap();
        assert_eq!(
            webhook::ezthrottle_signature(&secrets, t, body),
            c["ezthrottle_signature"].as_str().unwrap(),
            "{}",
            c["name"]
        );
        assert_eq!(
            webhook::standard_signature(&secrets, id, t, body),
            c["webhook_signature"].as_str().unwrap(),
            "{}",
            c["name"]
        );
        // And the verifier accepts what was signed, with each secret alone.
        for s in &secrets {
            let h = c["ezthrottle_signature"].as_str().unwrap();
            assert_eq!(webhook::verify_ezthrottle(h, body, &[s], t, 300), Ok(()));
        }
    }
}

#[test]
fn verifier_agrees_with_every_vector() {
    let v = vectors();
    let tol = v["tolerance_s"].as_u64().unwrap();
    let cases = v["verify"].as_array().unwrap();
    assert!(cases.iter().any(|c| !c["valid"].as_bool().unwrap()));
    for c in cases {
        let secrets = strs(&c["secrets"]);
        let body = c["body"].as_str().unwrap().as_bytes();
        let header = c["header"].as_str().unwrap();
        let now = c["now"].as_u64().unwrap();
        let got = match c["scheme"].as_str().unwrap() {
            "ezthrottle" => webhook::verify_ezthrottle(header, body, &secrets, now, tol),
            "standard" => webhook::verify_standard(
                c["msg_id"].as_str().unwrap(),
                &c["timestamp"].as_u64().unwrap().to_string(),
                header,
                body,
                &secrets,
                now,
                tol,
            ),
            other => panic!("unknown scheme {other}"),
        };
        let want = match c["reason"].as_str() {
            None => Ok(()),
            Some("mismatch") => Err(VerifyError::Mismatch),
            Some("too_old") => Err(VerifyError::TooOld),
            Some("too_new") => Err(VerifyError::TooNew),
            Some("no_signature") => Err(VerifyError::NoSignature),
            Some("malformed") => Err(VerifyError::Malformed),
            Some(r) => panic!("unknown reason {r}"),
        };
        assert_eq!(got, want, "{} / {}", c["scheme"], c["name"]);
    }
}
