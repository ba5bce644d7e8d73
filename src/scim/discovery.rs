//! Discovery documents (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes`,
//! `/Schemas`. Built from the same static definitions the engine obeys, so each claim
//! here is what the engine does.

use serde_json::{json, Value};

use super::core_schemas::{ALL_RESOURCE_TYPES, ALL_SCHEMAS};
use super::declared::{Declared, DeclaredSchema};
use super::list::{list_response, MAX_RESULTS};
use super::schema::{AttrDef, ResourceType, Schema};

const SPC_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

fn base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// `/ServiceProviderConfig` (RFC 7643 §5).
///
/// PATCH, filter (capped at [`MAX_RESULTS`]), sort and ETags are implemented by this
/// engine; bulk and password change are not (there is no SCIM password at all); the one
/// authentication scheme is the workspace's bearer token.
pub fn service_provider_config(base_url: &str, documentation_uri: Option<&str>) -> Value {
    let mut doc = json!({
        "schemas": [SPC_URN],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The workspace's SCIM token in an 'Authorization: Bearer' header.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", base(base_url)),
        }
    });
    if let Some(uri) = documentation_uri {
        doc["documentationUri"] = json!(uri);
    }
    doc
}

/// One ResourceType document (RFC 7643 §6), with the workspace's declared extensions
/// (never required: a resource without the extension object is accepted).
pub fn resource_type_document(rt: &ResourceType, base_url: &str, declared: &Declared) -> Value {
    let extensions: Vec<Value> = rt
        .extensions
        .iter()
        .map(|e| json!({"schema": e.schema.id, "required": e.required}))
        .chain(
            declared
                .of(rt.kind)
                .map(|d| json!({"schema": d.id, "required": false})),
        )
        .collect();
    json!({
        "schemas": [RESOURCE_TYPE_URN],
        "id": rt.name,
        "name": rt.name,
        "endpoint": rt.endpoint,
        "description": rt.description,
        "schema": rt.schema.id,
        "schemaExtensions": extensions,
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{}/ResourceTypes/{}", base(base_url), rt.name),
        }
    })
}

/// `/ResourceTypes` as a ListResponse.
pub fn resource_types(base_url: &str, declared: &Declared) -> Value {
    let all: Vec<Value> = ALL_RESOURCE_TYPES
        .iter()
        .map(|rt| resource_type_document(rt, base_url, declared))
        .collect();
    let n = all.len() as u64;
    list_response(all, n, 1)
}

/// `/ResourceTypes/{name}`; None answers 404.
pub fn resource_type(name: &str, base_url: &str, declared: &Declared) -> Option<Value> {
    ALL_RESOURCE_TYPES
        .iter()
        .find(|rt| rt.name.eq_ignore_ascii_case(name))
        .map(|rt| resource_type_document(rt, base_url, declared))
}

/// One Schema document (RFC 7643 §7).
pub fn schema_document(schema: &Schema, base_url: &str) -> Value {
    let attributes: Vec<Value> = schema.attributes.iter().map(AttrDef::to_json).collect();
    json!({
        "schemas": [SCHEMA_URN],
        "id": schema.id,
        "name": schema.name,
        "description": schema.description,
        "attributes": attributes,
        "meta": {
            "resourceType": "Schema",
            "location": format!("{}/Schemas/{}", base(base_url), schema.id),
        }
    })
}

/// A declared extension schema's document (RFC 7643 §7).
pub fn declared_document(d: &DeclaredSchema, base_url: &str) -> Value {
    let mut doc = d.to_json();
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("resourceType");
        obj.insert("schemas".into(), json!([SCHEMA_URN]));
        obj.insert(
            "meta".into(),
            json!({
                "resourceType": "Schema",
                "location": format!("{}/Schemas/{}", base(base_url), d.id),
            }),
        );
    }
    doc
}

/// `/Schemas` as a ListResponse: Assent's own, then the workspace's declared ones.
pub fn schemas(base_url: &str, declared: &Declared) -> Value {
    let all: Vec<Value> = ALL_SCHEMAS
        .iter()
        .map(|s| schema_document(s, base_url))
        .chain(declared.0.iter().map(|d| declared_document(d, base_url)))
        .collect();
    let n = all.len() as u64;
    list_response(all, n, 1)
}

/// `/Schemas/{urn}`; None answers 404.
pub fn schema(id: &str, base_url: &str, declared: &Declared) -> Option<Value> {
    ALL_SCHEMAS
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(id))
        .map(|s| schema_document(s, base_url))
        .or_else(|| {
            declared
                .0
                .iter()
                .find(|d| d.id.eq_ignore_ascii_case(id))
                .map(|d| declared_document(d, base_url))
        })
}

#[cfg(test)]
mod tests {
    use super::super::core_schemas::{ENTERPRISE_USER_URN, GROUP_URN, USER_URN};
    use super::*;

    const BASE: &str = "https://assent.example/v1/scim/v2";

    #[test]
    fn service_provider_config_is_truthful() {
        let spc = service_provider_config(BASE, None);
        assert_eq!(spc["schemas"], json!([SPC_URN]));
        assert_eq!(spc["patch"]["supported"], true);
        assert_eq!(spc["bulk"]["supported"], false);
        assert_eq!(
            spc["filter"],
            json!({"supported": true, "maxResults": MAX_RESULTS})
        );
        assert_eq!(spc["changePassword"]["supported"], false);
        assert_eq!(spc["sort"]["supported"], true);
        assert_eq!(spc["etag"]["supported"], true);
        assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
        assert_eq!(
            spc["meta"]["location"],
            format!("{BASE}/ServiceProviderConfig")
        );
        assert!(spc.get("documentationUri").is_none());
        let spc = service_provider_config(BASE, Some("https://docs.example/scim"));
        assert_eq!(spc["documentationUri"], "https://docs.example/scim");
    }

    #[test]
    fn resource_types_list() {
        let list = resource_types(BASE, &Declared::default());
        assert_eq!(list["totalResults"], 2);
        let user = &list["Resources"][0];
        assert_eq!(user["id"], "User");
        assert_eq!(user["endpoint"], "/Users");
        assert_eq!(user["schema"], USER_URN);
        assert_eq!(
            user["schemaExtensions"],
            json!([{"schema": ENTERPRISE_USER_URN, "required": false}])
        );
        assert_eq!(
            user["meta"]["location"],
            format!("{BASE}/ResourceTypes/User")
        );
        let group = resource_type("group", BASE, &Declared::default()).unwrap();
        assert_eq!(group["schema"], GROUP_URN);
        assert_eq!(group["schemaExtensions"], json!([]));
        assert!(resource_type("Device", BASE, &Declared::default()).is_none());
    }

    #[test]
    fn schemas_list_and_lookup() {
        let list = schemas(BASE, &Declared::default());
        assert_eq!(list["totalResults"], 3);
        let ids: Vec<&str> = list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![USER_URN, GROUP_URN, ENTERPRISE_USER_URN]);
        let user = schema(USER_URN, BASE, &Declared::default()).unwrap();
        let names: Vec<&str> = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"userName") && names.contains(&"emails") && names.contains(&"active")
        );
        assert!(
            !names.contains(&"password"),
            "no SCIM password is stored, so none is announced"
        );
        assert_eq!(
            user["meta"]["location"],
            format!("{BASE}/Schemas/{USER_URN}")
        );
        let ent = schema(ENTERPRISE_USER_URN, BASE, &Declared::default()).unwrap();
        let mgr = ent["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "manager")
            .unwrap();
        let subs: Vec<&str> = mgr["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(subs, vec!["value", "$ref", "displayName"]);
        assert!(schema("urn:nope", BASE, &Declared::default()).is_none());
    }

    #[test]
    fn group_members_schema() {
        let g = schema(GROUP_URN, BASE, &Declared::default()).unwrap();
        let members = g["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "members")
            .unwrap();
        assert_eq!(members["multiValued"], true);
        let value = members["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "value")
            .unwrap();
        assert_eq!(value["mutability"], "immutable");
        let dn = g["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "displayName")
            .unwrap();
        assert_eq!(dn["required"], true);
        assert_eq!(dn["uniqueness"], "server");
    }
}
