//! The schemas Assent serves: Core User and Group (RFC 7643 §4.1, §4.2, §8.7.1), the
//! Enterprise User extension (§4.3, §8.7.2) and the common attributes (§3.1).
//!
//! Deliberate differences from the RFC's own listing, so that `/Schemas` tells the truth:
//! - `password` is absent: Assent never stores a SCIM password (ServiceProviderConfig
//!   says `changePassword: false`). A User body or PATCH that sends one has it discarded
//!   unread (`resource::is_discarded`): Okta sends one on every create.
//! - Group `displayName` is required and unique per workspace: Entra ID matches groups
//!   by it and the issue demands 409 on a duplicate (RFC 7643 §4.2 calls it REQUIRED in
//!   prose while §8.7.1 says `required: false`).
//! - Group `members.display` is immutable, as RFC 7643 §2.4 gives it: kept as the client sent
//!   it with the member, and otherwise the member's own `displayName`, else its `userName`
//!   (issue 15: identity providers show it).
//! - The enterprise `manager.displayName` is listed (readOnly, so a client may send it) but
//!   never returned: a manager is its `value`, and its `$ref` while it names a User.

use super::schema::{
    attr, AttrDef, AttrType as T, Mutability, ResourceKind, ResourceType, Returned, Schema,
    SchemaExtension, Uniqueness,
};

pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Longest first, so a prefix match picks the most specific URN.
pub const KNOWN_URNS: &[&str] = &[ENTERPRISE_USER_URN, GROUP_URN, USER_URN];

const META_SUBS: &[AttrDef] = &[
    attr(
        "resourceType",
        T::String,
        "The name of the resource type of the resource.",
    )
    .read_only()
    .case_exact(),
    attr(
        "created",
        T::DateTime,
        "The time the resource was added to the service provider.",
    )
    .read_only(),
    attr(
        "lastModified",
        T::DateTime,
        "The most recent time the resource was modified.",
    )
    .read_only(),
    attr(
        "location",
        T::Reference,
        "The URI of the resource being returned.",
    )
    .read_only()
    .case_exact()
    .refs(&["uri"]),
    attr(
        "version",
        T::String,
        "The version (weak ETag) of the resource.",
    )
    .read_only()
    .case_exact(),
];

/// RFC 7643 §3.1: `id` is caseExact, readOnly, always returned, unique; `externalId` is
/// caseExact and set by the provisioning client (Entra puts its objectId there).
/// `schemas` (RFC 7643 §3) is listed so filters such as RFC 7644's
/// `schemas eq "urn:…:enterprise:2.0:User"` resolve; the engine maintains it itself.
pub const COMMON_ATTRS: &[AttrDef] = &[
    attr(
        "schemas",
        T::Reference,
        "The schema URIs the resource uses.",
    )
    .multi()
    .read_only()
    .returned(Returned::Always)
    .refs(&["uri"]),
    attr(
        "id",
        T::String,
        "Unique identifier for the resource, assigned by the service provider.",
    )
    .case_exact()
    .read_only()
    .returned(Returned::Always)
    .unique(Uniqueness::Server),
    attr(
        "externalId",
        T::String,
        "An identifier for the resource as defined by the provisioning client.",
    )
    .case_exact(),
    attr("meta", T::Complex, "Resource metadata.")
        .read_only()
        .subs(META_SUBS),
];

const NAME_SUBS: &[AttrDef] = &[
    attr(
        "formatted",
        T::String,
        "The full name, formatted for display.",
    ),
    attr("familyName", T::String, "The family name of the User."),
    attr("givenName", T::String, "The given name of the User."),
    attr("middleName", T::String, "The middle name(s) of the User."),
    attr(
        "honorificPrefix",
        T::String,
        "The honorific prefix(es) of the User.",
    ),
    attr(
        "honorificSuffix",
        T::String,
        "The honorific suffix(es) of the User.",
    ),
];

/// The `value`/`display`/`type`/`primary` shape shared by most multi-valued attributes.
macro_rules! plural_subs {
    ($value_desc:expr, $types:expr) => {
        &[
            attr("value", T::String, $value_desc),
            attr(
                "display",
                T::String,
                "A human-readable name, primarily used for display purposes.",
            ),
            attr(
                "type",
                T::String,
                "A label indicating the attribute's function.",
            )
            .canonical($types),
            attr(
                "primary",
                T::Boolean,
                "Indicates the primary or preferred value for this attribute.",
            ),
        ]
    };
}

const EMAIL_SUBS: &[AttrDef] =
    plural_subs!("Email address for the User.", &["work", "home", "other"]);
const PHONE_SUBS: &[AttrDef] = plural_subs!(
    "Phone number of the User.",
    &["work", "home", "mobile", "fax", "pager", "other"]
);
const IM_SUBS: &[AttrDef] = plural_subs!(
    "Instant messaging address for the User.",
    &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]
);
const ENTITLEMENT_SUBS: &[AttrDef] = plural_subs!("The value of an entitlement.", &[]);
const ROLE_SUBS: &[AttrDef] = plural_subs!("The value of a role.", &[]);

const PHOTO_SUBS: &[AttrDef] = &[
    attr("value", T::Reference, "URL of a photo of the User.")
        .case_exact()
        .refs(&["external"]),
    attr(
        "display",
        T::String,
        "A human-readable name, primarily used for display purposes.",
    ),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    )
    .canonical(&["photo", "thumbnail"]),
    attr("primary", T::Boolean, "Indicates the primary photo."),
];

const CERT_SUBS: &[AttrDef] = &[
    attr(
        "value",
        T::Binary,
        "The DER-encoded X.509 certificate, base64.",
    )
    .case_exact(),
    attr(
        "display",
        T::String,
        "A human-readable name, primarily used for display purposes.",
    ),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    ),
    attr("primary", T::Boolean, "Indicates the primary certificate."),
];

const ADDRESS_SUBS: &[AttrDef] = &[
    attr(
        "formatted",
        T::String,
        "The full mailing address, formatted for display.",
    ),
    attr(
        "streetAddress",
        T::String,
        "The full street address component.",
    ),
    attr("locality", T::String, "The city or locality component."),
    attr("region", T::String, "The state or region component."),
    attr(
        "postalCode",
        T::String,
        "The zip code or postal code component.",
    ),
    attr("country", T::String, "The country name component."),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    )
    .canonical(&["work", "home", "other"]),
    attr(
        "primary",
        T::Boolean,
        "Indicates the primary mailing address.",
    ),
];

/// RFC 7643 §4.1.2: `groups` is computed by the service provider from memberships.
const USER_GROUP_SUBS: &[AttrDef] = &[
    attr("value", T::String, "The identifier of the User's group.").read_only(),
    attr(
        "$ref",
        T::Reference,
        "The URI of the corresponding Group resource.",
    )
    .read_only()
    .case_exact()
    .refs(&["User", "Group"]),
    attr(
        "display",
        T::String,
        "A human-readable name, primarily used for display purposes.",
    )
    .read_only(),
    attr("type", T::String, "Membership type: direct or indirect.")
        .read_only()
        .canonical(&["direct", "indirect"]),
];

const USER_ATTRS: &[AttrDef] = &[
    attr(
        "userName",
        T::String,
        "Unique identifier for the User, typically used to sign in.",
    )
    .required()
    .unique(Uniqueness::Server),
    attr(
        "name",
        T::Complex,
        "The components of the user's real name.",
    )
    .subs(NAME_SUBS),
    attr(
        "displayName",
        T::String,
        "The name of the User, suitable for display to end-users.",
    ),
    attr(
        "nickName",
        T::String,
        "The casual way to address the user in real life.",
    ),
    attr(
        "profileUrl",
        T::Reference,
        "A fully qualified URL pointing to the User's online profile.",
    )
    .refs(&["external"]),
    attr(
        "title",
        T::String,
        "The user's title, such as \"Vice President\".",
    ),
    attr(
        "userType",
        T::String,
        "Identifies the relationship between the organization and the user.",
    ),
    attr(
        "preferredLanguage",
        T::String,
        "The User's preferred written or spoken language.",
    ),
    attr(
        "locale",
        T::String,
        "The User's default location for localization.",
    ),
    attr(
        "timezone",
        T::String,
        "The User's time zone in the IANA Time Zone database format.",
    ),
    attr(
        "active",
        T::Boolean,
        "The User's administrative status; false is Entra's soft delete.",
    ),
    attr("emails", T::Complex, "Email addresses for the user.")
        .multi()
        .subs(EMAIL_SUBS),
    attr("phoneNumbers", T::Complex, "Phone numbers for the User.")
        .multi()
        .subs(PHONE_SUBS),
    attr(
        "ims",
        T::Complex,
        "Instant messaging addresses for the User.",
    )
    .multi()
    .subs(IM_SUBS),
    attr("photos", T::Complex, "URLs of photos of the User.")
        .multi()
        .subs(PHOTO_SUBS),
    attr(
        "addresses",
        T::Complex,
        "A physical mailing address for this User.",
    )
    .multi()
    .subs(ADDRESS_SUBS),
    attr(
        "groups",
        T::Complex,
        "The groups the user belongs to, computed by the service provider.",
    )
    .multi()
    .read_only()
    .subs(USER_GROUP_SUBS),
    attr(
        "entitlements",
        T::Complex,
        "A list of entitlements for the User.",
    )
    .multi()
    .subs(ENTITLEMENT_SUBS),
    attr("roles", T::Complex, "A list of roles for the User.")
        .multi()
        .subs(ROLE_SUBS),
    attr(
        "x509Certificates",
        T::Complex,
        "A list of certificates issued to the User.",
    )
    .multi()
    .subs(CERT_SUBS),
];

const MANAGER_SUBS: &[AttrDef] = &[
    // Required here (RFC 7643 only RECOMMENDs it): Assent resolves the manager by id.
    attr(
        "value",
        T::String,
        "The id of the SCIM resource representing the User's manager.",
    )
    .required(),
    attr(
        "$ref",
        T::Reference,
        "The URI of the SCIM resource representing the User's manager.",
    )
    .case_exact()
    .refs(&["User"]),
    attr(
        "displayName",
        T::String,
        "The displayName of the User's manager; ignored on input, never returned (read the manager).",
    )
    .read_only()
    .returned(Returned::Never),
];

const ENTERPRISE_ATTRS: &[AttrDef] = &[
    attr(
        "employeeNumber",
        T::String,
        "Numeric or alphanumeric identifier assigned to a person.",
    ),
    attr(
        "costCenter",
        T::String,
        "Identifies the name of a cost center.",
    ),
    attr(
        "organization",
        T::String,
        "Identifies the name of an organization.",
    ),
    attr("division", T::String, "Identifies the name of a division."),
    attr(
        "department",
        T::String,
        "Identifies the name of a department.",
    ),
    attr(
        "manager",
        T::Complex,
        "The User's manager; must be a User of the same workspace.",
    )
    .subs(MANAGER_SUBS),
];

/// RFC 7643 §8.7.1 marks these immutable: a member entry is added or removed, never
/// edited in place. `value` is required here: a member is stored by its id.
const MEMBER_SUBS: &[AttrDef] = &[
    attr(
        "value",
        T::String,
        "Identifier of the member of this Group.",
    )
    .required()
    .mutability(Mutability::Immutable),
    attr("$ref", T::Reference, "The URI of the member resource.")
        .case_exact()
        .mutability(Mutability::Immutable)
        .refs(&["User", "Group"]),
    attr("type", T::String, "The type of the member.")
        .mutability(Mutability::Immutable)
        .canonical(&["User", "Group"]),
    attr(
        "display",
        T::String,
        "The member's display name: as sent with the member, else the member's displayName or userName.",
    )
    .mutability(Mutability::Immutable),
];

const GROUP_ATTRS: &[AttrDef] = &[
    attr(
        "displayName",
        T::String,
        "A human-readable name for the Group; unique in the workspace.",
    )
    .required()
    .unique(Uniqueness::Server),
    attr("members", T::Complex, "A list of members of the Group.")
        .multi()
        .subs(MEMBER_SUBS),
];

pub static USER_SCHEMA: Schema = Schema {
    id: USER_URN,
    name: "User",
    description: "User Account",
    attributes: USER_ATTRS,
};

pub static ENTERPRISE_USER_SCHEMA: Schema = Schema {
    id: ENTERPRISE_USER_URN,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: ENTERPRISE_ATTRS,
};

pub static GROUP_SCHEMA: Schema = Schema {
    id: GROUP_URN,
    name: "Group",
    description: "Group",
    attributes: GROUP_ATTRS,
};

pub static USER_RESOURCE_TYPE: ResourceType = ResourceType {
    kind: ResourceKind::User,
    name: "User",
    endpoint: "/Users",
    description: "User Account",
    schema: &USER_SCHEMA,
    extensions: &[SchemaExtension {
        schema: &ENTERPRISE_USER_SCHEMA,
        required: false,
    }],
    common: COMMON_ATTRS,
};

pub static GROUP_RESOURCE_TYPE: ResourceType = ResourceType {
    kind: ResourceKind::Group,
    name: "Group",
    endpoint: "/Groups",
    description: "Group",
    schema: &GROUP_SCHEMA,
    extensions: &[],
    common: COMMON_ATTRS,
};

/// Every schema document served at `/Schemas`.
pub static ALL_SCHEMAS: [&Schema; 3] = [&USER_SCHEMA, &GROUP_SCHEMA, &ENTERPRISE_USER_SCHEMA];

/// Every resource type served at `/ResourceTypes`.
pub static ALL_RESOURCE_TYPES: [&ResourceType; 2] = [&USER_RESOURCE_TYPE, &GROUP_RESOURCE_TYPE];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn walk(list: &'static [AttrDef], f: &mut impl FnMut(&'static AttrDef)) {
        for a in list {
            f(a);
            walk(a.sub_attributes, f);
        }
    }

    #[test]
    fn names_are_unique_case_insensitively_at_every_level() {
        fn check(list: &'static [AttrDef]) {
            let mut seen = HashSet::new();
            for a in list {
                assert!(
                    seen.insert(a.name.to_ascii_lowercase()),
                    "duplicate {}",
                    a.name
                );
                check(a.sub_attributes);
            }
        }
        for s in ALL_SCHEMAS {
            check(s.attributes);
        }
        check(COMMON_ATTRS);
    }

    #[test]
    fn complex_attributes_have_sub_attributes_and_others_do_not() {
        for s in ALL_SCHEMAS {
            walk(s.attributes, &mut |a| {
                assert_eq!(
                    a.ty == T::Complex,
                    !a.sub_attributes.is_empty(),
                    "{}",
                    a.name
                );
                if a.ty == T::Reference {
                    assert!(
                        !a.reference_types.is_empty(),
                        "{} needs referenceTypes",
                        a.name
                    );
                }
            });
        }
    }

    #[test]
    fn extension_names_do_not_clash_with_core_names() {
        // The unqualified fallback in ResourceType::find relies on this.
        for a in ENTERPRISE_ATTRS {
            assert!(USER_SCHEMA.attr(a.name).is_none());
            assert!(super::super::schema::find_attr(COMMON_ATTRS, a.name).is_none());
        }
    }

    #[test]
    fn rfc7643_case_exactness_of_key_attributes() {
        let rt = &USER_RESOURCE_TYPE;
        assert!(rt.find(None, "id").unwrap().def.case_exact);
        assert!(rt.find(None, "externalId").unwrap().def.case_exact);
        assert!(!rt.find(None, "userName").unwrap().def.case_exact);
        assert!(!rt.find(None, "displayName").unwrap().def.case_exact);
        let emails = rt.find(None, "emails").unwrap().def;
        assert!(!emails.sub("value").unwrap().case_exact);
        assert!(rt.find(None, "password").is_none());
    }

    #[test]
    fn known_urns_are_longest_first() {
        for w in KNOWN_URNS.windows(2) {
            assert!(w[0].len() >= w[1].len());
        }
    }
}
