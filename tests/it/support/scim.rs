//! The SCIM side of the black-box tests: a workspace's token obtained the real way (View Token,
//! approved on a phone), and a SCIM client that checks what every answer must be:
//! `application/scim+json`, errors in the SCIM Error schema, nothing secret in a body.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method};
use serde_json::{json, Value};

use super::{json_body, Browser, Phone, TestServer, Workspace};

pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The owner of a new workspace, logged in with a phone enrolled, and the workspace's SCIM token
/// as View Token releases it after the phone approved.
pub struct ScimTenant {
    pub ws: Workspace,
    pub owner: Browser,
    pub token: String,
}

impl ScimTenant {
    pub async fn new(server: &TestServer) -> ScimTenant {
        let ws = server.create_workspace();
        let owner = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
        let enrollment = owner.enrollment().await;
        let mut phone = Phone::new(server);
        phone
            .enroll(enrollment["code"].as_str().expect("code"))
            .await;
        let challenge = owner.start("reveal").await;
        let id = challenge["challenge_id"].as_str().expect("challenge_id");
        phone
            .approve(id, challenge["number"].as_i64().expect("number"))
            .await;
        let released = json_body(owner.release(id).await, 200).await;
        let token = released["token"].as_str().expect("token").to_owned();
        ScimTenant { ws, owner, token }
    }

    pub fn client(&self, server: &TestServer) -> Scim {
        Scim::new(server, &self.token)
    }
}

/// An answer of the SCIM API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// `Value::Null` for an empty body (204, 304).
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns the body.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "expected {status}: {}", self.body);
        self.body
    }

    /// Asserts a SCIM error with this status and `scimType` (None: no `scimType`).
    pub fn error(self, status: u16, scim_type: Option<&str>) -> Value {
        assert_eq!(self.status, status, "expected {status}: {}", self.body);
        assert_eq!(self.body["schemas"], json!([ERROR_URN]), "{}", self.body);
        assert_eq!(self.body["status"], status.to_string(), "{}", self.body);
        assert_eq!(
            self.body["scimType"].as_str(),
            scim_type,
            "scimType of {}",
            self.body
        );
        assert!(self.body["detail"].is_string(), "{}", self.body);
        self.body
    }

    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
            .to_owned()
    }

    /// The `Resources` of a ListResponse, checking its shape.
    pub fn resources(self) -> Vec<Value> {
        let body = self.expect(200);
        assert_eq!(body["schemas"], json!([LIST_URN]), "{body}");
        let resources = body["Resources"]
            .as_array()
            .unwrap_or_else(|| panic!("a ListResponse always has Resources: {body}"))
            .clone();
        assert_eq!(body["itemsPerPage"], resources.len(), "{body}");
        assert!(body["totalResults"].as_u64().unwrap() >= resources.len() as u64);
        resources
    }
}

pub struct Scim {
    client: Client,
    /// `{base}/v1/scim/v2`: the Tenant URL.
    pub base: String,
    token: String,
}

impl Scim {
    pub fn new(server: &TestServer, token: &str) -> Scim {
        Scim {
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: format!("{}/v1/scim/v2", server.base),
            token: token.to_owned(),
        }
    }

    /// Sends a request as Entra ID does (`application/scim+json` body, bearer token) and checks the
    /// answer's form.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/scim+json; charset=utf-8")
                .body(b.to_string());
        }
        self.check(method, path, req.send().await.expect("SCIM request"))
            .await
    }

    pub async fn check(&self, method: Method, path: &str, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("read the SCIM answer");
        for leak in [
            self.token.as_str(),
            "assent_scim_",
            "panicked",
            "SELECT ",
            "INSERT ",
            "sqlx",
        ] {
            assert!(
                !text.contains(leak),
                "{method} {path}: {status} holds {leak:?}: {text}"
            );
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                ct.starts_with("application/scim+json"),
                "{method} {path}: {status} with content-type {ct:?}: {text}"
            );
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        if status >= 400 {
            assert_eq!(
                body["schemas"],
                json!([ERROR_URN]),
                "{method} {path}: {body}"
            );
            assert_eq!(
                body["status"],
                status.to_string(),
                "{method} {path}: {body}"
            );
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, operations: Value) -> Answer {
        let body = json!({"schemas": [PATCH_URN], "Operations": operations});
        self.send(Method::PATCH, path, Some(&body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// `GET /Users?filter=…` with the filter form-encoded as Entra ID sends it (`+` for spaces).
    pub async fn filter(&self, endpoint: &str, filter: &str, extra: &str) -> Vec<Value> {
        let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        self.get(&format!("{endpoint}?filter={encoded}{extra}"))
            .await
            .resources()
    }
}

/// The body Entra ID posts to create a user (Microsoft's SCIM provisioning reference).
pub fn entra_user(user_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": external_id,
        "userName": user_name,
        "active": true,
        "displayName": format!("Display {user_name}"),
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE_URN: {"employeeNumber": "701984", "department": "Tours"}
    })
}

/// The body Entra ID posts to create a group: always empty, with Microsoft's own URN listed.
pub fn entra_group(display_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [GROUP_URN, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group"],
        "externalId": external_id,
        "displayName": display_name,
        "meta": {"resourceType": "Group"}
    })
}

/// A random UUID-shaped string (Entra's object ids, unknown ids).
pub fn guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
