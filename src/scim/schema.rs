//! Schema model (RFC 7643 §2, §7): the attribute characteristics the engine obeys.
//!
//! The same static data serves the `/Schemas` documents ([`super::discovery`]) and every
//! lookup the engine makes (case sensitivity in filters, mutability in PATCH, `returned`
//! in projection), so what Assent announces is what it does. The definitions themselves
//! live in [`super::core_schemas`].

use serde_json::{json, Map, Value};

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// RFC 7643 §7 `uniqueness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition with its RFC 7643 §7 characteristics.
#[derive(Debug, Clone, Copy)]
pub struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: &'static str,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [AttrDef],
}

/// Starts a definition with the RFC 7643 §2.2 defaults: single-valued, optional,
/// case-insensitive, readWrite, returned by default, no uniqueness.
pub const fn attr(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
    AttrDef {
        name,
        ty,
        multi_valued: false,
        description,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
    }
}

impl AttrDef {
    pub const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    pub const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    pub const fn read_only(self) -> Self {
        self.mutability(Mutability::ReadOnly)
    }
    pub const fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    pub const fn unique(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    pub const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical_values = values;
        self
    }
    pub const fn refs(mut self, types: &'static [&'static str]) -> Self {
        self.reference_types = types;
        self
    }
    pub const fn subs(mut self, subs: &'static [AttrDef]) -> Self {
        self.sub_attributes = subs;
        self
    }

    /// The sub-attribute named `name`, matched case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.sub_attributes, name)
    }

    /// Strings compare case-insensitively unless `caseExact` (RFC 7643 §2.3.1); `id`
    /// and `$ref`-like references are caseExact in the definitions themselves.
    pub fn is_case_insensitive_string(&self) -> bool {
        matches!(self.ty, AttrType::String | AttrType::Reference) && !self.case_exact
    }

    /// The RFC 7643 §7 representation used by `/Schemas`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        m.insert("caseExact".into(), json!(self.case_exact));
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if self.ty == AttrType::Complex {
            let subs: Vec<Value> = self.sub_attributes.iter().map(AttrDef::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        Value::Object(m)
    }
}

/// Case-insensitive lookup in a list of definitions.
pub fn find_attr(list: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    list.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// A schema: a URN and its attributes.
#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
}

/// Schemas are identified by their URN.
impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Schema {}

impl Schema {
    pub fn attr(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.attributes, name)
    }
}

/// The two resource kinds Assent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn resource_type(self) -> &'static ResourceType {
        match self {
            ResourceKind::User => &super::core_schemas::USER_RESOURCE_TYPE,
            ResourceKind::Group => &super::core_schemas::GROUP_RESOURCE_TYPE,
        }
    }
}

/// A schema extension a resource type allows (RFC 7643 §6 `schemaExtensions`).
#[derive(Debug)]
pub struct SchemaExtension {
    pub schema: &'static Schema,
    pub required: bool,
}

/// A resource type (RFC 7643 §6): its endpoint, core schema and extensions.
#[derive(Debug)]
pub struct ResourceType {
    pub kind: ResourceKind,
    /// `id` and `name` of the ResourceType document, and `meta.resourceType` of resources.
    pub name: &'static str,
    pub endpoint: &'static str,
    pub description: &'static str,
    pub schema: &'static Schema,
    pub extensions: &'static [SchemaExtension],
    /// The common attributes of RFC 7643 §3.1 (`id`, `externalId`, `meta`). They are
    /// part of every resource but of no schema document.
    pub common: &'static [AttrDef],
}

/// Where an attribute lives in a resource's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A top-level key (core schema or common attribute).
    Core,
    /// A key inside the extension object named by the schema URN.
    Extension(&'static Schema),
}

impl Location {
    /// The extension URN, if any.
    pub fn urn(self) -> Option<&'static str> {
        match self {
            Location::Core => None,
            Location::Extension(s) => Some(s.id),
        }
    }
}

/// An attribute found by name: its definition and where it lives.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub def: &'static AttrDef,
    pub location: Location,
}

impl ResourceType {
    /// The schema (core or an allowed extension) whose URN is `urn`, case-insensitively.
    pub fn schema_by_urn(&self, urn: &str) -> Option<&'static Schema> {
        if self.schema.id.eq_ignore_ascii_case(urn) {
            return Some(self.schema);
        }
        self.extension_by_urn(urn)
    }

    /// The allowed extension schema whose URN is `urn`.
    pub fn extension_by_urn(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions
            .iter()
            .map(|e| e.schema)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Finds a top-level attribute by optional schema URN and name.
    ///
    /// Without a URN the name is looked up in the common attributes, then the core
    /// schema (RFC 7644 §3.10: core attributes may be unqualified), then the extensions:
    /// their names do not clash with core names, and clients do send `department`
    /// unqualified.
    pub fn find(&self, urn: Option<&str>, name: &str) -> Option<Found> {
        match urn {
            Some(urn) => {
                if self.schema.id.eq_ignore_ascii_case(urn) {
                    return self.schema.attr(name).map(|def| Found {
                        def,
                        location: Location::Core,
                    });
                }
                let ext = self.extension_by_urn(urn)?;
                ext.attr(name).map(|def| Found {
                    def,
                    location: Location::Extension(ext),
                })
            }
            None => {
                if let Some(def) = find_attr(self.common, name).or_else(|| self.schema.attr(name)) {
                    return Some(Found {
                        def,
                        location: Location::Core,
                    });
                }
                self.extensions.iter().find_map(|e| {
                    e.schema.attr(name).map(|def| Found {
                        def,
                        location: Location::Extension(e.schema),
                    })
                })
            }
        }
    }

    /// Every schema URN this resource type may carry, core first.
    pub fn schema_urns(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.schema.id).chain(self.extensions.iter().map(|e| e.schema.id))
    }
}

/// Every schema URN the engine knows. The path parser needs them to split
/// `urn:…:enterprise:2.0:User:manager.value` at the right colon: the URN itself
/// contains dots and colons.
pub fn known_schema_urns() -> &'static [&'static str] {
    super::core_schemas::KNOWN_URNS
}

#[cfg(test)]
mod tests {
    use super::super::core_schemas::{ENTERPRISE_USER_SCHEMA, ENTERPRISE_USER_URN};
    use super::*;

    #[test]
    fn find_is_case_insensitive_and_locates_extensions() {
        let rt = ResourceKind::User.resource_type();
        let f = rt.find(None, "USERNAME").unwrap();
        assert_eq!(f.def.name, "userName");
        assert_eq!(f.location, Location::Core);

        let f = rt
            .find(Some(ENTERPRISE_USER_URN), "employeenumber")
            .unwrap();
        assert_eq!(f.def.name, "employeeNumber");
        assert_eq!(f.location, Location::Extension(&ENTERPRISE_USER_SCHEMA));

        // Unqualified extension attribute falls back to the extension.
        let f = rt.find(None, "department").unwrap();
        assert_eq!(f.location.urn(), Some(ENTERPRISE_USER_URN));

        // Core URN qualifies core attributes.
        let f = rt.find(Some("urn:ietf:params:scim:schemas:core:2.0:user"), "name");
        assert_eq!(f.unwrap().def.name, "name");

        assert!(rt.find(None, "password").is_none());
        assert!(rt.find(Some("urn:example:unknown"), "x").is_none());
    }

    #[test]
    fn groups_do_not_see_user_extension() {
        let rt = ResourceKind::Group.resource_type();
        assert!(rt.find(None, "department").is_none());
        assert!(rt.find(Some(ENTERPRISE_USER_URN), "department").is_none());
        assert_eq!(rt.find(None, "MEMBERS").unwrap().def.name, "members");
    }

    #[test]
    fn attribute_json_follows_rfc7643_section7() {
        let rt = ResourceKind::User.resource_type();
        let emails = rt.find(None, "emails").unwrap().def.to_json();
        assert_eq!(emails["type"], "complex");
        assert_eq!(emails["multiValued"], true);
        let subs = emails["subAttributes"].as_array().unwrap();
        let ty = subs.iter().find(|s| s["name"] == "type").unwrap();
        assert_eq!(ty["canonicalValues"], json!(["work", "home", "other"]));
        let user_name = rt.find(None, "userName").unwrap().def.to_json();
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["required"], true);
        assert_eq!(user_name["caseExact"], false);
        assert!(user_name.get("subAttributes").is_none());
    }
}
