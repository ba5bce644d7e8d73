//! Listing (RFC 7644 §3.4.2): the query of a GET or `/.search`, pagination, sorting,
//! the page window kept while streaming matches, and the ListResponse.

use std::cmp::Ordering;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::error::ScimError;
use super::eval::{compile, resolve, Resolved, Scope};
use super::filter::Filter;
use super::path::AttrPath;
use super::projection::Projection;
use super::schema::{AttrType, ResourceType};
use super::value::{fold_case, get_ci, key_ci, parse_time};

/// The most resources one page holds; announced as `filter.maxResults` in
/// ServiceProviderConfig, and the page size when `count` is absent.
pub const MAX_RESULTS: u64 = 200;

pub const LIST_RESPONSE_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_REQUEST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// `startIndex` (1-based) and `count` after RFC 7644 §3.4.2.4's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub start_index: u64,
    pub count: u64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            start_index: 1,
            count: MAX_RESULTS,
        }
    }
}

impl Page {
    /// "A value less than 1 SHALL be interpreted as 1" and "a negative value SHALL be
    /// interpreted as 0"; a count above [`MAX_RESULTS`] is capped (§3.4.2.4 lets the
    /// service provider return fewer than asked).
    pub fn new(start_index: Option<i64>, count: Option<i64>) -> Self {
        Page {
            start_index: start_index.map_or(1, |s| s.max(1) as u64),
            count: count.map_or(MAX_RESULTS, |c| (c.max(0) as u64).min(MAX_RESULTS)),
        }
    }

    /// From query-string text; a non-integer is 400 `invalidValue`.
    pub fn parse(start_index: Option<&str>, count: Option<&str>) -> Result<Self, ScimError> {
        let num = |name: &str, s: Option<&str>| -> Result<Option<i64>, ScimError> {
            s.map(|s| {
                let s = s.trim();
                // Saturate huge values rather than refusing them.
                s.parse::<i64>().or_else(|_| {
                    let digits = s.strip_prefix('-').unwrap_or(s);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        Ok(if s.starts_with('-') {
                            i64::MIN
                        } else {
                            i64::MAX
                        })
                    } else {
                        Err(ScimError::invalid_value(format!(
                            "'{name}' must be an integer"
                        )))
                    }
                })
            })
            .transpose()
        };
        Ok(Page::new(
            num("startIndex", start_index)?,
            num("count", count)?,
        ))
    }

    /// The number of matches to skip.
    pub fn offset(&self) -> u64 {
        self.start_index - 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Ascending,
    Descending,
}

/// `sortBy` and `sortOrder` (RFC 7644 §3.4.2.3).
#[derive(Debug, Clone)]
pub struct Sort {
    pub by: AttrPath,
    pub order: SortOrder,
    resolved: Resolved,
}

impl Sort {
    /// Unknown attributes and orders are 400 `invalidValue`; a complex attribute sorts
    /// by its `value` (`emails` → `emails.value`).
    pub fn parse(
        sort_by: &str,
        sort_order: Option<&str>,
        rt: &'static ResourceType,
    ) -> Result<Self, ScimError> {
        let mut by = AttrPath::parse(sort_by.trim())
            .map_err(|e| ScimError::invalid_value(e.detail().to_owned()))?;
        let mut resolved = resolve(Scope::Resource(rt), &by)
            .ok_or_else(|| ScimError::invalid_value(format!("unknown sortBy attribute '{by}'")))?;
        if resolved.leaf().ty == AttrType::Complex {
            let v = resolved
                .leaf()
                .sub("value")
                .filter(|_| resolved.sub.is_none())
                .ok_or_else(|| {
                    ScimError::invalid_value(format!("sortBy '{by}' needs a sub-attribute"))
                })?;
            resolved.sub = Some(v);
            by.sub = Some(v.name.to_owned());
        }
        let order = match sort_order.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("ascending") => SortOrder::Ascending,
            Some("descending") => SortOrder::Descending,
            Some(_) => {
                return Err(ScimError::invalid_value(
                    "'sortOrder' must be ascending or descending",
                ))
            }
        };
        Ok(Sort {
            by,
            order,
            resolved,
        })
    }

    /// Orders two resources: by the key, then by `id` so pages are stable. Resources
    /// without a value sort after the others when ascending; descending is the exact
    /// reverse (SQL: `ASC NULLS LAST` / `DESC NULLS FIRST`, Postgres's default).
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let ord = match (self.key(a), self.key(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let ord = ord.then_with(|| id_of(a).cmp(id_of(b)));
        match self.order {
            SortOrder::Ascending => ord,
            SortOrder::Descending => ord.reverse(),
        }
    }

    /// The value to sort by: for a multi-valued attribute, the primary value, else the
    /// first (§3.4.2.3).
    fn key(&self, resource: &Value) -> Option<SortKey> {
        let r = &self.resolved;
        let v = if r.attr.multi_valued {
            let list = Resolved { sub: None, ..*r }.values(resource);
            let chosen = list
                .iter()
                .find(|e| get_ci(e, "primary") == Some(&Value::Bool(true)))
                .or_else(|| list.first())?;
            match r.sub {
                Some(s) => get_ci(chosen, s.name)?,
                None => chosen,
            }
        } else {
            *r.values(resource).first()?
        };
        let leaf = r.leaf();
        Some(match (leaf.ty, v) {
            (AttrType::DateTime, Value::String(s)) => SortKey::Time(parse_time(s)?),
            (_, Value::String(s)) if leaf.is_case_insensitive_string() => {
                SortKey::Str(fold_case(s))
            }
            (_, Value::String(s)) => SortKey::Str(s.clone()),
            (_, Value::Number(n)) => SortKey::Num(n.as_f64()?),
            (_, Value::Bool(b)) => SortKey::Bool(*b),
            _ => return None,
        })
    }
}

fn id_of(v: &Value) -> &str {
    get_ci(v, "id").and_then(Value::as_str).unwrap_or("")
}

#[derive(Debug, PartialEq, PartialOrd)]
enum SortKey {
    Str(String),
    Num(f64),
    Bool(bool),
    Time(OffsetDateTime),
}

impl SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.partial_cmp(other).unwrap_or(Ordering::Equal)
    }
}

/// A parsed list query: GET parameters or a `/.search` body.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub filter: Option<Filter>,
    pub sort: Option<Sort>,
    pub page: Page,
    pub projection: Projection,
}

impl ListRequest {
    /// From decoded query parameters (names matched case-insensitively; others, such as
    /// Entra's `aadOptscim062020`, ignored).
    pub fn from_query<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        rt: &'static ResourceType,
    ) -> Result<Self, ScimError> {
        let params: Vec<(&str, &str)> = params.into_iter().collect();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        Ok(ListRequest {
            filter: get("filter").map(|f| compile(f, rt)).transpose()?,
            sort: get("sortBy")
                .map(|s| Sort::parse(s, get("sortOrder"), rt))
                .transpose()?,
            page: Page::parse(get("startIndex"), get("count"))?,
            projection: Projection::parse(get("attributes"), get("excludedAttributes"))?,
        })
    }

    /// From a `POST …/.search` body (RFC 7644 §3.4.3).
    pub fn from_search(body: &Value, rt: &'static ResourceType) -> Result<Self, ScimError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("the search body must be a JSON object"))?;
        let get = |name: &str| key_ci(obj, name).map(|k| &obj[k]).filter(|v| !v.is_null());
        let is_search = get("schemas").and_then(Value::as_array).is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_URN))
            })
        });
        if !is_search {
            return Err(ScimError::invalid_syntax(format!(
                "'schemas' must be [\"{SEARCH_REQUEST_URN}\"]"
            )));
        }
        let string = |name: &str| -> Result<Option<&str>, ScimError> {
            get(name)
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        ScimError::invalid_value(format!("'{name}' must be a string"))
                    })
                })
                .transpose()
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            get(name)
                .map(|v| {
                    v.as_i64().ok_or_else(|| {
                        ScimError::invalid_value(format!("'{name}' must be an integer"))
                    })
                })
                .transpose()
        };
        // RFC 7644 §3.4.3 makes these arrays of strings; a comma-separated string is
        // accepted too.
        let names = |name: &str| -> Result<Vec<String>, ScimError> {
            match get(name) {
                None => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(s
                    .split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str().map(str::to_owned).ok_or_else(|| {
                            ScimError::invalid_value(format!("'{name}' must list strings"))
                        })
                    })
                    .collect(),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "'{name}' must list strings"
                ))),
            }
        };
        Ok(ListRequest {
            filter: string("filter")?.map(|f| compile(f, rt)).transpose()?,
            sort: string("sortBy")?
                .map(|s| Sort::parse(s, string("sortOrder")?, rt))
                .transpose()?,
            page: Page::new(int("startIndex")?, int("count")?),
            projection: Projection::from_lists(
                &names("attributes")?,
                &names("excludedAttributes")?,
            )?,
        })
    }
}

/// The ListResponse body (RFC 7644 §3.4.2). `Resources` is present even when empty:
/// Entra ID's Test Connection expects an empty ListResponse for an unknown userName.
///
/// Built by hand: `json!` takes each value through `to_value`, which for `Resources` would copy
/// every resource of the page, map by map, and drop the originals.
pub fn list_response(resources: Vec<Value>, total_results: u64, start_index: u64) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("schemas".into(), json!([LIST_RESPONSE_URN]));
    body.insert("totalResults".into(), total_results.into());
    body.insert("startIndex".into(), start_index.into());
    body.insert("itemsPerPage".into(), resources.len().into());
    body.insert("Resources".into(), Value::Array(resources));
    Value::Object(body)
}

/// Keeps the requested page while matches stream past, so a listing never holds more
/// than `startIndex - 1 + count` resources whatever the workspace size.
///
/// Without a sort, matches must be offered in a stable storage order (e.g. by `id`);
/// with one, the window keeps the best `offset + count` by [`Sort::compare`].
#[derive(Debug)]
pub struct PageWindow<'s> {
    page: Page,
    sort: Option<&'s Sort>,
    total: u64,
    kept: Vec<Value>,
}

impl<'s> PageWindow<'s> {
    pub fn new(page: Page, sort: Option<&'s Sort>) -> Self {
        PageWindow {
            page,
            sort,
            total: 0,
            kept: Vec::new(),
        }
    }

    /// Offers one resource that matched the filter.
    pub fn offer(&mut self, resource: Value) {
        let index = self.total;
        self.total += 1;
        let limit = (self.page.offset() + self.page.count) as usize;
        match self.sort {
            None => {
                if index >= self.page.offset() && index < self.page.offset() + self.page.count {
                    self.kept.push(resource);
                }
            }
            Some(sort) => {
                if limit == 0 {
                    return;
                }
                let at = self
                    .kept
                    .partition_point(|k| sort.compare(k, &resource) != Ordering::Greater);
                if at < limit {
                    self.kept.insert(at, resource);
                    self.kept.truncate(limit);
                }
            }
        }
    }

    /// Matches offered so far: `totalResults`.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The page, in order.
    pub fn into_page(self) -> Vec<Value> {
        match self.sort {
            None => self.kept,
            Some(_) => self
                .kept
                .into_iter()
                .skip(self.page.offset() as usize)
                .collect(),
        }
    }

    /// The page as a ListResponse, each resource passed through `project`.
    pub fn into_list_response(self, project: impl Fn(&Value) -> Value) -> Value {
        let total = self.total;
        let start = self.page.start_index;
        let page: Vec<Value> = self.into_page().iter().map(project).collect();
        list_response(page, total, start)
    }
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
