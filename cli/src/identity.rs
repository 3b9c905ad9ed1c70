//! Run identity: the content hash of a run's canonical configuration. Only explicitly written
//! values that differ from their defaults enter it, numbers are canonical (`2e-5` == `0.00002`),
//! and keys are sorted, so the same point gets the same id on every submit and after a later
//! sftctl adds a setting with a default.

use crate::spec::{Default, TRAIN_KEYS, Val, train_key};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// JSON text with object keys sorted at every level, whatever map type serde_json was built with.
pub fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String((*k).clone()),
                        canonical_json(&m[*k])
                    )
                })
                .collect();
            format!("{{{}}}", body.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// True when `v` equals key `k`'s default.
fn is_default(k: &str, v: &Val) -> bool {
    match train_key(k) {
        Some((_, d)) => match (d, v) {
            (Default::Int(a), Val::Int(b)) => a == *b,
            (Default::Float(a), Val::Float(b)) => a == *b,
            (Default::Str(a), Val::Str(b)) => a == b,
            _ => false,
        },
        None => false,
    }
}

/// The identity document of a run: model, data sets and the explicit non-default
/// hyperparameters.
pub fn identity(
    model: &str,
    data: &serde_json::Value,
    explicit: &BTreeMap<String, Val>,
) -> serde_json::Value {
    let train: serde_json::Map<String, serde_json::Value> = explicit
        .iter()
        .filter(|(k, v)| !is_default(k, v))
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    serde_json::json!({ "model": model, "data": data, "train": train })
}

/// The run id: the first 12 hex digits of SHA-256 of the canonical identity.
pub fn run_id(identity: &serde_json::Value) -> String {
    let digest = Sha256::digest(canonical_json(identity).as_bytes());
    hex::encode(digest)[..12].to_owned()
}

/// All hyperparameters with defaults filled in: what the runtime receives.
pub fn resolved(explicit: &BTreeMap<String, Val>) -> BTreeMap<String, Val> {
    TRAIN_KEYS
        .iter()
        .map(|(k, _, d, _)| {
            (
                (*k).to_owned(),
                explicit.get(*k).cloned().unwrap_or_else(|| (*d).into()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::check_value;

    fn id_of(pairs: &[(&str, toml::Value)]) -> String {
        let explicit = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), check_value(k, v).unwrap()))
            .collect();
        run_id(&identity("m", &serde_json::json!([]), &explicit))
    }

    #[test]
    fn same_value_same_id() {
        use toml::Value::{Float, Integer};
        assert_eq!(
            id_of(&[("lr", Float(2e-5))]),
            id_of(&[("lr", Float(0.00002))])
        );
        // An integer written for a float key is the same number.
        assert_eq!(
            id_of(&[("epochs", Integer(2))]),
            id_of(&[("epochs", Float(2.0))])
        );
        // A default written out changes nothing, so neither does a default added later.
        assert_eq!(
            id_of(&[("lr", Float(1e-4)), ("warmup_steps", Integer(0))]),
            id_of(&[("lr", Float(1e-4))])
        );
        assert_ne!(id_of(&[("lr", Float(1e-4))]), id_of(&[("lr", Float(2e-4))]));
        assert_eq!(id_of(&[]).len(), 12);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":2e-5,"c":[1,2]}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":[1,2],"d":0.00002},"b":1}"#);
    }
}
