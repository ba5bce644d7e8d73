//! What a phone keeps and shows: the enrollment offer of the console's QR code, the device state
//! (never a private key), the pending challenges, and the parsers of the server's answers.

use serde_json::Value;

use crate::error::{CompanionError, Result};

/// Longest field the SDK takes from the server or a QR code; anything longer is not Assent's.
const MAX_FIELD: usize = 2048;
/// Most challenges a pending list may hold (a person has a handful at most).
const MAX_PENDING: usize = 100;

/// What the console's QR code (`assent://enroll?server=…&code=…`) or a typed code gives.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EnrollmentOffer {
    pub server: String,
    pub code: String,
}

/// Reads the console's QR code.
#[uniffi::export]
pub fn parse_enrollment_uri(uri: String) -> Result<EnrollmentOffer> {
    let bad = |why: &str| CompanionError::payload(format!("not an Assent enrollment code: {why}"));
    if uri.len() > MAX_FIELD {
        return Err(bad("too long"));
    }
    let url = url::Url::parse(uri.trim()).map_err(|_| bad("not a URI"))?;
    if url.scheme() != "assent" || url.host_str() != Some("enroll") {
        return Err(bad("not assent://enroll"));
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let server = param("server").ok_or_else(|| bad("no server"))?;
    let code = param("code").ok_or_else(|| bad("no code"))?;
    enrollment_offer(server, code).map_err(|_| bad("bad server or code"))
}

/// An offer from a server URL and a code typed by hand.
#[uniffi::export]
pub fn enrollment_offer(server: String, code: String) -> Result<EnrollmentOffer> {
    let server_url =
        url::Url::parse(&server).map_err(|_| CompanionError::input("the server is not a URL"))?;
    if !matches!(server_url.scheme(), "https" | "http") || server_url.host_str().is_none() {
        return Err(CompanionError::input("the server must be an http(s) URL"));
    }
    let code = code.trim().to_owned();
    if code.is_empty() || code.len() > MAX_FIELD || code.chars().any(char::is_whitespace) {
        return Err(CompanionError::input(
            "the enrollment code is empty or malformed",
        ));
    }
    Ok(EnrollmentOffer {
        server: server.trim_end_matches('/').to_owned(),
        code,
    })
}

/// Where pushes reach this phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PushPlatform {
    /// Apple Push Notification service; `sandbox` for development builds.
    Apns { sandbox: bool },
    /// Firebase Cloud Messaging.
    Fcm,
}

/// What the app sends when it enrolls.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EnrollRequest {
    /// The phone's name as the console lists it ("Pixel 8").
    pub name: String,
    pub platform: PushPlatform,
    /// The APNs or FCM token, when the app has one yet (`update_push_token` sends it later).
    pub push_token: Option<String>,
}

/// What the phone keeps between launches. No private key: that stays in the signer.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, uniffi::Record)]
pub struct DeviceState {
    pub server: String,
    pub device_id: String,
    /// The `aud` of every JWS this device signs (the server's public URL).
    pub audience: String,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Reads the enrollment answer `{"device_id","audience"}`.
pub(crate) fn parse_enrolled(server: &str, body: &[u8]) -> Result<DeviceState> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| CompanionError::payload("the enrollment answer is not JSON"))?;
    Ok(DeviceState {
        server: server.to_owned(),
        device_id: text(&value, "device_id")?,
        audience: text(&value, "audience")?,
    })
}

/// A pending challenge, as the phone shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Challenge {
    pub id: String,
    /// `scim_token.reveal`, `scim_token.rotate`, `scim_token.support_rotate`, `device.enroll`, …
    pub action: String,
    /// The action in words, to show as the request's title ("View the SCIM token").
    pub description: String,
    pub nonce: String,
    /// The right number and two others, in the server's random order: show all three.
    pub number_choices: Vec<u8>,
    pub workspace_slug: String,
    pub workspace_name: String,
    /// Who asked (their e-mail).
    pub requested_by: String,
    /// Where from: the requester's IP address and browser.
    pub ip: String,
    pub user_agent: String,
    /// A support rotation's ticket and reason (signed with the decision).
    pub ticket: Option<String>,
    pub reason: Option<String>,
    /// Whose phones a reset removes.
    pub member_email: Option<String>,
    /// This is the second person's approval under the two-person rule.
    pub second_approval: bool,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub expires_at: String,
}

impl Challenge {
    /// Whether the decision must sign the workspace and the ticket (CONTRACT 8).
    pub(crate) fn signs_support_claims(&self) -> bool {
        self.action == "scim_token.support_rotate" || self.ticket.is_some()
    }

    pub(crate) fn expires_at_unix(&self) -> Result<i64> {
        time::OffsetDateTime::parse(
            &self.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .map_err(|_| CompanionError::payload("expires_at is not an RFC 3339 time"))
    }
}

/// The action in words, for a push or a challenge the server sent without a description.
#[uniffi::export]
pub fn describe_action(action: String) -> String {
    match action.as_str() {
        "scim_token.reveal" => "View the SCIM token",
        "scim_token.rotate" => "Regenerate the SCIM token",
        "scim_token.support_rotate" => "Support: rotate the SCIM token",
        "device.enroll" => "Add a new phone to your account",
        "member.promote" => "Promote a member",
        "member.devices_reset" => "Reset a member's phones",
        _ => "Approve a request",
    }
    .to_owned()
}

fn text(value: &Value, key: &str) -> Result<String> {
    match value.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= MAX_FIELD => Ok(s.to_owned()),
        _ => Err(CompanionError::payload(format!(
            "{key} is missing or not a short string"
        ))),
    }
}

fn optional_text(value: &Value, key: &str) -> Result<Option<String>> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_FIELD => Ok(Some(s.clone())),
        Some(_) => Err(CompanionError::payload(format!(
            "{key} is not a short string"
        ))),
    }
}

fn parse_challenge(c: &Value) -> Result<Challenge> {
    let empty = Value::Null;
    let object = |key: &str| match c.get(key) {
        Some(v @ Value::Object(_)) => Ok(v),
        None | Some(Value::Null) if key == "context" => Ok(&empty),
        _ => Err(CompanionError::payload(format!(
            "{key} is missing or not an object"
        ))),
    };
    let choices = c
        .get("number_choices")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 3)
        .ok_or_else(|| CompanionError::payload("number_choices is not three numbers"))?
        .iter()
        .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| CompanionError::payload("number_choices is not three numbers"))?;
    let workspace = object("workspace")?;
    let requested_by = object("requested_by")?;
    let context = object("context")?;
    let action = text(c, "action")?;
    let member_email = match context.get("member") {
        Some(member) => optional_text(member, "email")?,
        None => None,
    };
    let challenge = Challenge {
        id: text(c, "id")?,
        description: optional_text(context, "description")?
            .unwrap_or_else(|| describe_action(action.clone())),
        action,
        nonce: text(c, "nonce")?,
        number_choices: choices,
        workspace_slug: text(workspace, "slug")?,
        workspace_name: text(workspace, "name")?,
        requested_by: text(requested_by, "email")?,
        ip: optional_text(context, "ip")?.unwrap_or_default(),
        user_agent: optional_text(context, "user_agent")?.unwrap_or_default(),
        ticket: optional_text(context, "ticket")?,
        reason: optional_text(context, "reason")?,
        member_email,
        second_approval: context
            .get("second_approval")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created_at: text(c, "created_at")?,
        expires_at: text(c, "expires_at")?,
    };
    challenge.expires_at_unix()?;
    Ok(challenge)
}

/// Reads `GET /v1/mobile/challenges`: `{"challenges":[…]}`.
pub fn parse_pending(body: &[u8]) -> Result<Vec<Challenge>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| CompanionError::payload("the pending list is not JSON"))?;
    let list = value
        .get("challenges")
        .and_then(Value::as_array)
        .ok_or_else(|| CompanionError::payload("no challenges list"))?;
    if list.len() > MAX_PENDING {
        return Err(CompanionError::payload("too many pending challenges"));
    }
    list.iter().map(parse_challenge).collect()
}

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DecisionStatus {
    Approved,
    /// Approved by this phone; the two-person rule still waits for a second person.
    AwaitingSecondApproval,
    Denied,
}

/// Reads the decision answer `{"status":"approved"|"denied"[,"awaiting":"second_approval"]}`.
pub(crate) fn parse_decision(body: &[u8]) -> Result<DecisionStatus> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| CompanionError::payload("the decision answer is not JSON"))?;
    match (
        value.get("status").and_then(Value::as_str),
        value.get("awaiting"),
    ) {
        (Some("approved"), None | Some(Value::Null)) => Ok(DecisionStatus::Approved),
        (Some("approved"), Some(_)) => Ok(DecisionStatus::AwaitingSecondApproval),
        (Some("denied"), _) => Ok(DecisionStatus::Denied),
        _ => Err(CompanionError::payload(
            "the decision answer has no known status",
        )),
    }
}

/// Why the person denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DenyReason {
    /// "I did not ask for this": recorded as a suspected attack.
    NotMe,
    /// "I asked, but by mistake."
    Mistake,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotMe => "not_me",
            DenyReason::Mistake => "mistake",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"id": "c1", "action": "scim_token.support_rotate", "nonce": "n1", "number_choices": [12, 47, 90],
            "workspace": {"slug": "acme", "name": "Acme"}, "requested_by": {"email": "ops@assent.example"},
            "context": {"ip": "198.51.100.7", "user_agent": "Firefox", "ticket": "T-1", "reason": "leak",
                        "description": "Support: rotate the SCIM token"},
            "created_at": "2026-11-28T12:00:00Z", "expires_at": "2026-11-28T12:02:00Z"})
    }

    #[test]
    fn a_pending_list_reads_into_challenges() {
        let body = json!({"challenges": [sample()]}).to_string();
        let list = parse_pending(body.as_bytes()).unwrap();
        assert_eq!(list.len(), 1);
        let c = &list[0];
        assert_eq!(c.number_choices, vec![12, 47, 90]);
        assert_eq!(
            (c.workspace_slug.as_str(), c.ticket.as_deref()),
            ("acme", Some("T-1"))
        );
        assert!(c.signs_support_claims());
        assert_eq!(c.expires_at_unix().unwrap(), 1_795_867_320);
        assert_eq!(parse_pending(br#"{"challenges": []}"#).unwrap(), vec![]);
    }

    /// One way to break a challenge.
    type Edit = Box<dyn Fn(&mut Value)>;

    #[test]
    fn malformed_pending_lists_are_invalid_payloads() {
        let mut cases: Vec<Vec<u8>> = [
            "",
            "null",
            "[]",
            "{}",
            r#"{"challenges": {}}"#,
            r#"{"challenges": [1]}"#,
            "{\"challenges\": [",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let broken: Vec<Edit> = vec![
            Box::new(|c| c["number_choices"] = json!([1, 2])),
            Box::new(|c| c["number_choices"] = json!([1, 2, 300])),
            Box::new(|c| c["number_choices"] = json!([1, 2, -3])),
            Box::new(|c| c["number_choices"] = json!(["1", 2, 3])),
            Box::new(|c| c["id"] = json!(7)),
            Box::new(|c| c["id"] = json!("")),
            Box::new(|c| c["nonce"] = json!(null)),
            Box::new(|c| c["workspace"] = json!("acme")),
            Box::new(|c| c["workspace"]["slug"] = json!("x".repeat(5000))),
            Box::new(|c| c["requested_by"] = json!({})),
            Box::new(|c| c["context"]["ticket"] = json!(["T-1"])),
            Box::new(|c| c["expires_at"] = json!("tomorrow")),
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("action");
            }),
        ];
        for f in broken {
            let mut c = sample();
            f(&mut c);
            cases.push(json!({"challenges": [c]}).to_string().into_bytes());
        }
        cases.push(
            json!({"challenges": vec![sample(); 101]})
                .to_string()
                .into_bytes(),
        );
        for body in cases {
            assert!(
                matches!(
                    parse_pending(&body),
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{} was accepted",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn qr_codes_and_typed_codes() {
        let offer = parse_enrollment_uri(
            "assent://enroll?server=https%3A%2F%2Fassent.example%2F&code=ABCD-1234".into(),
        )
        .unwrap();
        assert_eq!(
            offer,
            EnrollmentOffer {
                server: "https://assent.example".into(),
                code: "ABCD-1234".into()
            }
        );
        for bad in [
            "",
            "https://assent.example/enroll?server=https://a&code=x",
            "assent://other?server=https://a&code=x",
            "assent://enroll?code=x",
            "assent://enroll?server=https://a",
            "assent://enroll?server=https://a&code=",
            "assent://enroll?server=javascript:alert(1)&code=x",
            "assent://enroll?server=file:///etc&code=x",
            "assent://enroll?server=https://a&code=a%20b",
            &format!("assent://enroll?server=https://a&code={}", "x".repeat(3000)),
            "not a uri at all",
        ] {
            assert!(
                matches!(
                    parse_enrollment_uri(bad.into()),
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{bad} was accepted"
            );
        }
        assert!(enrollment_offer("http://127.0.0.1:8080".into(), " CODE ".into()).is_ok());
        assert!(enrollment_offer("ftp://x".into(), "CODE".into()).is_err());
        assert!(enrollment_offer("https://x".into(), "".into()).is_err());
    }

    #[test]
    fn server_answers_are_read_or_refused() {
        let state =
            parse_enrolled("https://a", br#"{"device_id":"d1","audience":"https://a"}"#).unwrap();
        assert_eq!(state.device_id, "d1");
        for bad in [
            &b""[..],
            b"{}",
            br#"{"device_id":"d1"}"#,
            br#"{"device_id":1,"audience":"a"}"#,
            b"<html>",
        ] {
            assert!(matches!(
                parse_enrolled("https://a", bad),
                Err(CompanionError::InvalidPayload { .. })
            ));
        }
        assert_eq!(
            parse_decision(br#"{"status":"approved"}"#).unwrap(),
            DecisionStatus::Approved
        );
        assert_eq!(
            parse_decision(br#"{"status":"approved","awaiting":"second_approval"}"#).unwrap(),
            DecisionStatus::AwaitingSecondApproval
        );
        assert_eq!(
            parse_decision(br#"{"status":"denied"}"#).unwrap(),
            DecisionStatus::Denied
        );
        for bad in [
            &b""[..],
            b"{}",
            br#"{"status":"pending"}"#,
            br#"{"status":1}"#,
            b"[]",
        ] {
            assert!(matches!(
                parse_decision(bad),
                Err(CompanionError::InvalidPayload { .. })
            ));
        }
        assert!(!format!("{state:?}").contains("audience"));
    }
}
