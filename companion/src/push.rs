//! The pushes Assent sends (src/push/apns.rs and fcm.rs of the server), read into typed events.
//! A push carries no secret and no number: on a challenge the app fetches the pending list.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{CompanionError, Result};
use crate::model::describe_action;

/// Largest payload the SDK reads: APNs caps a payload at 4 KB, FCM data at 4 KB.
const MAX_PAYLOAD: usize = 8 * 1024;
const MAX_FIELD: usize = 2048;

/// What a push means to the app.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PushEvent {
    /// A request waits for this person: fetch the pending list and show it.
    Challenge {
        challenge_id: String,
        action: String,
        /// The action in words.
        description: String,
        workspace: String,
        expires_at: String,
    },
    /// Silent: the challenge was decided or expired; remove its prompt.
    Resolved { challenge_id: String },
    /// Something happened that needs no answer (support rotated the token, a phone was added,
    /// a request was reported as "not me"); `action` names which.
    Notice {
        challenge_id: Option<String>,
        action: String,
        workspace: String,
    },
}

/// APNs: the notification's whole `userInfo` as JSON (`aps` beside Assent's keys).
#[uniffi::export]
pub fn parse_apns_payload(json: String) -> Result<PushEvent> {
    if json.len() > MAX_PAYLOAD {
        return Err(CompanionError::payload("the push payload is too large"));
    }
    let value: Value = serde_json::from_str(&json)
        .map_err(|_| CompanionError::payload("the push payload is not JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| CompanionError::payload("the push payload is not an object"))?;
    let fields = object
        .iter()
        .filter(|(k, _)| k.as_str() != "aps")
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(CompanionError::payload(format!("{k} is not a string"))),
        })
        .collect::<Result<HashMap<_, _>>>()?;
    event(&fields)
}

/// FCM: the message's `data` map, as Android's `RemoteMessage.getData()` gives it.
#[uniffi::export]
pub fn parse_fcm_data(data: HashMap<String, String>) -> Result<PushEvent> {
    if data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_PAYLOAD {
        return Err(CompanionError::payload("the push payload is too large"));
    }
    event(&data)
}

fn event(data: &HashMap<String, String>) -> Result<PushEvent> {
    let field = |key: &str| match data.get(key) {
        Some(v) if !v.is_empty() && v.len() <= MAX_FIELD => Ok(v.clone()),
        _ => Err(CompanionError::payload(format!(
            "{key} is missing or too long"
        ))),
    };
    let kind = data.get("kind").map(String::as_str);
    match kind {
        Some("challenge") => {
            let action = field("action")?;
            let expires_at = field("expires_at")?;
            time::OffsetDateTime::parse(
                &expires_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| CompanionError::payload("expires_at is not an RFC 3339 time"))?;
            Ok(PushEvent::Challenge {
                challenge_id: field("challenge_id")?,
                description: describe_action(action.clone()),
                action,
                workspace: field("workspace")?,
                expires_at,
            })
        }
        Some("resolved") => Ok(PushEvent::Resolved {
            challenge_id: field("challenge_id")?,
        }),
        Some("notice") => Ok(PushEvent::Notice {
            challenge_id: field("challenge_id").ok(),
            action: field("action")?,
            workspace: field("workspace")?,
        }),
        _ => Err(CompanionError::payload("not an Assent push (unknown kind)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As src/push/apns.rs builds it.
    fn apns(kind: &str) -> Value {
        json!({"aps": {"alert": {"title": "Reveal the SCIM token?", "body": "Acme: check"}, "mutable-content": 1},
               "kind": kind, "challenge_id": "c1", "action": "scim_token.reveal", "workspace": "Acme",
               "expires_at": "2026-11-28T12:02:00Z"})
    }

    fn fcm(kind: &str) -> HashMap<String, String> {
        let data = json!({"kind": kind, "challenge_id": "c1", "action": "scim_token.support_rotated",
                          "workspace": "Acme", "expires_at": "2026-11-28T12:02:00Z"});
        serde_json::from_value(data).unwrap()
    }

    #[test]
    fn the_three_kinds_read_from_both_platforms() {
        assert_eq!(
            parse_apns_payload(apns("challenge").to_string()).unwrap(),
            PushEvent::Challenge {
                challenge_id: "c1".into(),
                action: "scim_token.reveal".into(),
                description: "View the SCIM token".into(),
                workspace: "Acme".into(),
                expires_at: "2026-11-28T12:02:00Z".into()
            }
        );
        assert_eq!(
            parse_apns_payload(apns("resolved").to_string()).unwrap(),
            PushEvent::Resolved {
                challenge_id: "c1".into()
            }
        );
        assert_eq!(
            parse_fcm_data(fcm("notice")).unwrap(),
            PushEvent::Notice {
                challenge_id: Some("c1".into()),
                action: "scim_token.support_rotated".into(),
                workspace: "Acme".into()
            }
        );
        let mut no_id = fcm("notice");
        no_id.insert("challenge_id".into(), String::new());
        assert!(matches!(
            parse_fcm_data(no_id).unwrap(),
            PushEvent::Notice {
                challenge_id: None,
                ..
            }
        ));
    }

    #[test]
    fn malformed_pushes_are_invalid_payloads() {
        let mut apns_cases = vec![
            String::new(),
            "null".into(),
            "[]".into(),
            "{".into(),
            json!({"aps": {}}).to_string(),
            "x".repeat(MAX_PAYLOAD + 1),
        ];
        for (key, value) in [
            ("kind", json!("other")),
            ("kind", json!(1)),
            ("challenge_id", json!("")),
            ("challenge_id", json!(null)),
            ("action", json!(["a"])),
            ("expires_at", json!("soon")),
            ("workspace", json!("x".repeat(MAX_FIELD + 1))),
        ] {
            let mut payload = apns("challenge");
            payload[key] = value;
            apns_cases.push(payload.to_string());
        }
        for payload in apns_cases {
            assert!(
                matches!(
                    parse_apns_payload(payload.clone()),
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{payload} was accepted"
            );
        }
        for remove in ["kind", "challenge_id", "action", "workspace", "expires_at"] {
            let mut data = fcm("challenge");
            data.remove(remove);
            assert!(
                parse_fcm_data(data).is_err(),
                "a challenge without {remove} was accepted"
            );
        }
        let mut resolved = fcm("resolved");
        resolved.remove("challenge_id");
        assert!(parse_fcm_data(resolved).is_err());
        let mut notice = fcm("notice");
        notice.remove("action");
        assert!(parse_fcm_data(notice).is_err());
        let mut huge = fcm("challenge");
        huge.insert("padding".into(), "x".repeat(MAX_PAYLOAD));
        assert!(parse_fcm_data(huge).is_err());
        assert!(parse_fcm_data(HashMap::new()).is_err());
    }
}
