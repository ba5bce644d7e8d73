//! Planning a filter onto the indexed columns of `scim_users` / `scim_groups`, so that a
//! filter never needs a whole workspace in memory: SQL narrows, Rust confirms, paging
//! streams.
//!
//! Columns (see [`super::resource::IndexColumns`], which computes them with the same
//! [`fold_case`] the evaluator uses):
//!
//! | column               | table  | from                                  |
//! |----------------------|--------|---------------------------------------|
//! | `id`                 | both   | `id` (caseExact)                      |
//! | `external_id`        | both   | `externalId` (caseExact)              |
//! | `user_name_lower`    | users  | `userName`, folded                    |
//! | `display_name_lower` | both   | `displayName`, folded                 |
//! | `work_email_lower`   | users  | the (primary) work email, folded      |
//! | `email_overflow`     | users  | some email differs from the work one  |
//! | `active`             | users  | `active`, NULL when unassigned        |
//!
//! How the caller uses a plan (`workspace_id` and paging are the caller's):
//!
//! - `None`: nothing indexable. Stream the workspace's rows in batches by key
//!   (`WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT n`), run
//!   [`super::eval::matches`] on each, and feed matches to a
//!   [`super::list::PageWindow`].
//! - `Some(plan)` with `exact: true`: the SQL selects exactly the matching rows. Use
//!   `WHERE workspace_id = ? AND (<where_sql>)` with `COUNT(*)` for `totalResults` and
//!   `LIMIT/OFFSET` (or [`sort_column`]) for the page; no re-check needed.
//! - `Some(plan)` with `exact: false`: the SQL selects a superset. Stream those rows as
//!   for `None` and re-check each with [`super::eval::matches`].
//!
//! Placeholders are `?`, in the order of `binds`; [`SqlPlan::numbered`] renders them as
//! `$n` for Postgres. The SQL holds no literal other than `ESCAPE '\'`.
//!
//! Attributes of undeclared schema extensions ([`super::extension`]) are planned onto the
//! `scim_ext_values` side table: `eq`/`ne` on a string or boolean as
//! `t.id [NOT] IN (SELECT resource_id … WHERE workspace, resource type, path, typed key)`,
//! exact (the keys fold case as the evaluator does); `eq` on a number as the same, a superset
//! (numbers are re-checked). The table's index `(workspace_id, resource_type, path, value)`
//! answers the subquery, and `(workspace_id, id)` the rows.
//!
//! Negation is pushed down to the columns with explicit NULL handling, so `not (…)`
//! over a nullable column means what the evaluator means (absent ⇒ `ne` matches).
//! Ordering operators (`gt`…) on strings are never planned: SQL collations disagree with
//! Rust's code-point order.

use super::eval::{is_custom, resolve, Resolved, Scope};
use super::extension::{index_path, literal_key};
use super::filter::{CompValue, CompareOp, Filter};
use super::list::{Sort, SortOrder};
use super::path::AttrPath;
use super::schema::{Location, ResourceKind};
use super::value::fold_case;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlBind {
    Text(String),
    Bool(bool),
    /// The workspace id the listing is for (the store binds it): a subquery on
    /// `scim_ext_values` names it itself, so the database can run it once, by its index.
    Workspace,
}

/// A WHERE fragment over the indexed columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlPlan {
    /// A parenthesised boolean expression with `?` placeholders.
    pub where_sql: String,
    pub binds: Vec<SqlBind>,
    /// true: exactly the matching rows; false: a superset to re-check in Rust.
    pub exact: bool,
    /// `where_sql` for SQLite: the same statement, each `scim_ext_values` subquery marked
    /// selective with `likelihood(…, 0.001)`. SQLite keeps no statistics here (no ANALYZE
    /// runs), and without the hint it walks the workspace in `seq` order and probes the
    /// subquery's list on each row; with it, it probes `(workspace_id, id)` with the list.
    /// Postgres has no such function and needs none: it turns the `IN` into a semi-join.
    pub sqlite_where_sql: String,
}

impl SqlPlan {
    /// `where_sql` with its placeholders numbered `$first`, `$first+1`, … (Postgres).
    pub fn numbered(&self, first: usize) -> String {
        number(&self.where_sql, first)
    }

    /// The same for SQLite ([`SqlPlan::sqlite_where_sql`]).
    pub fn numbered_sqlite(&self, first: usize) -> String {
        number(&self.sqlite_where_sql, first)
    }
}

fn number(sql: &str, first: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = first;
    for c in sql.chars() {
        if c == '?' {
            out.push('$');
            out.push_str(&n.to_string());
            n += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// Plans a [`super::eval::compile`]d filter for resources of `kind`.
pub fn plan(filter: &Filter, kind: ResourceKind) -> Option<SqlPlan> {
    let (expr, exact) = match plan_node(filter, kind) {
        Planned::All => return None,
        Planned::Exact(e) => (e, true),
        Planned::Superset(e) => (e, false),
    };
    let mut where_sql = String::new();
    let mut binds = Vec::new();
    render(&expr, &mut where_sql, &mut binds, false);
    let mut sqlite_where_sql = String::new();
    render(&expr, &mut sqlite_where_sql, &mut Vec::new(), true);
    Some(SqlPlan {
        where_sql,
        sqlite_where_sql,
        binds,
        exact,
    })
}

/// An ORDER BY column for a sort the database can do itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortColumn {
    pub column: &'static str,
    pub descending: bool,
}

/// The indexed column to `ORDER BY` for `sort`, if any. Render it as
/// `column ASC NULLS LAST, id ASC` (descending: `DESC NULLS FIRST, id DESC`) to match
/// [`Sort::compare`]; on Postgres add `COLLATE "C"` so strings order by code point as
/// in Rust (SQLite's default BINARY collation already does). Without a column, the
/// caller streams and sorts through a [`super::list::PageWindow`].
pub fn sort_column(sort: &Sort, kind: ResourceKind) -> Option<SortColumn> {
    let r = resolve(Scope::Resource(kind.resource_type()), &sort.by)?;
    let col = column(&r, kind)?;
    matches!(col.kind, ColKind::Folded | ColKind::Exact).then_some(SortColumn {
        column: col.name,
        descending: sort.order == SortOrder::Descending,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    /// Holds `fold_case(value)`: eq and LIKE on folded binds are exact.
    Folded,
    /// Holds the value as is (caseExact): eq is exact, LIKE only a superset (SQLite's
    /// LIKE ignores ASCII case).
    Exact,
    Bool,
}

#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    kind: ColKind,
}

fn column(r: &Resolved, kind: ResourceKind) -> Option<Column> {
    if r.location != Location::Core || r.sub.is_some() {
        return None;
    }
    let (name, ck) = match (kind, r.attr.name) {
        (_, "id") => ("id", ColKind::Exact),
        (_, "externalId") => ("external_id", ColKind::Exact),
        (_, "displayName") => ("display_name_lower", ColKind::Folded),
        (ResourceKind::User, "userName") => ("user_name_lower", ColKind::Folded),
        (ResourceKind::User, "active") => ("active", ColKind::Bool),
        _ => return None,
    };
    Some(Column { name, kind: ck })
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(SqlBind),
    /// `LIKE ? ESCAPE '\'` with an escaped pattern.
    Like(String),
    /// Assigned: not NULL, and for text not empty (as the evaluator's `pr`).
    Present {
        text: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    col: &'static str,
    test: Test,
    negated: bool,
}

/// A boolean expression in negation normal form.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Leaf(Leaf),
    /// Some `scim_ext_values` row of the resource has this path and typed key.
    Ext {
        resource_type: &'static str,
        path: String,
        key: String,
        negated: bool,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

enum Planned {
    Exact(Expr),
    Superset(Expr),
    /// No constraint the columns can express.
    All,
}

fn leaf(col: &'static str, test: Test) -> Expr {
    Expr::Leaf(Leaf {
        col,
        test,
        negated: false,
    })
}

fn negate(e: Expr) -> Expr {
    match e {
        Expr::Leaf(mut l) => {
            l.negated = !l.negated;
            Expr::Leaf(l)
        }
        Expr::Ext {
            resource_type,
            path,
            key,
            negated,
        } => Expr::Ext {
            resource_type,
            path,
            key,
            negated: !negated,
        },
        Expr::And(v) => Expr::Or(v.into_iter().map(negate).collect()),
        Expr::Or(v) => Expr::And(v.into_iter().map(negate).collect()),
    }
}

fn plan_node(f: &Filter, kind: ResourceKind) -> Planned {
    let rt = kind.resource_type();
    match f {
        Filter::Not(inner) => match plan_node(inner, kind) {
            Planned::Exact(e) => Planned::Exact(negate(e)),
            // The complement of a superset is not a superset of the complement.
            _ => Planned::All,
        },
        Filter::And(items) => {
            let mut exact = true;
            let mut parts = Vec::new();
            for p in items.iter().map(|i| plan_node(i, kind)) {
                match p {
                    Planned::Exact(e) => parts.push(e),
                    Planned::Superset(e) => {
                        exact = false;
                        parts.push(e);
                    }
                    Planned::All => exact = false,
                }
            }
            match (parts.is_empty(), exact) {
                (true, _) => Planned::All,
                (false, true) => Planned::Exact(Expr::And(parts)),
                (false, false) => Planned::Superset(Expr::And(parts)),
            }
        }
        Filter::Or(items) => {
            let mut exact = true;
            let mut parts = Vec::new();
            for p in items.iter().map(|i| plan_node(i, kind)) {
                match p {
                    Planned::Exact(e) => parts.push(e),
                    Planned::Superset(e) => {
                        exact = false;
                        parts.push(e);
                    }
                    Planned::All => return Planned::All,
                }
            }
            if exact {
                Planned::Exact(Expr::Or(parts))
            } else {
                Planned::Superset(Expr::Or(parts))
            }
        }
        Filter::Present(path) => {
            let Some(col) = resolve(Scope::Resource(rt), path).and_then(|r| column(&r, kind))
            else {
                return Planned::All;
            };
            Planned::Exact(leaf(
                col.name,
                Test::Present {
                    text: col.kind != ColKind::Bool,
                },
            ))
        }
        Filter::Compare { path, op, value } => compare(path, *op, value, kind),
        Filter::ValuePath { attr, filter } => value_path(attr, filter, kind),
    }
}

fn compare(path: &AttrPath, op: CompareOp, value: &CompValue, kind: ResourceKind) -> Planned {
    let rt = kind.resource_type();
    if is_custom(Scope::Resource(rt), path) {
        return extension_compare(path, op, value, rt.name);
    }
    let Some(r) = resolve(Scope::Resource(rt), path) else {
        return Planned::All;
    };
    if is_email_value(&r, kind) {
        return email(op, value);
    }
    let Some(col) = column(&r, kind) else {
        return Planned::All;
    };
    let present = || {
        leaf(
            col.name,
            Test::Present {
                text: col.kind != ColKind::Bool,
            },
        )
    };
    match (col.kind, op, value) {
        (_, CompareOp::Eq, CompValue::Null) => Planned::Exact(negate(present())),
        (_, CompareOp::Ne, CompValue::Null) => Planned::Exact(present()),
        (ColKind::Bool, CompareOp::Eq, CompValue::Bool(b)) => {
            Planned::Exact(leaf(col.name, Test::Eq(SqlBind::Bool(*b))))
        }
        (ColKind::Bool, CompareOp::Ne, CompValue::Bool(b)) => {
            Planned::Exact(negate(leaf(col.name, Test::Eq(SqlBind::Bool(*b)))))
        }
        (ColKind::Folded | ColKind::Exact, _, CompValue::Str(s)) => {
            let s = if col.kind == ColKind::Folded {
                fold_case(s)
            } else {
                s.clone()
            };
            let t = match op {
                CompareOp::Eq | CompareOp::Ne => Test::Eq(SqlBind::Text(s)),
                CompareOp::Sw | CompareOp::Ew | CompareOp::Co => Test::Like(like_pattern(op, &s)),
                _ => return Planned::All,
            };
            let like = matches!(t, Test::Like(_));
            let e = leaf(col.name, t);
            match (op, col.kind, like) {
                (CompareOp::Ne, _, _) => Planned::Exact(negate(e)),
                (_, ColKind::Exact, true) => Planned::Superset(e),
                _ => Planned::Exact(e),
            }
        }
        _ => Planned::All,
    }
}

/// `eq`/`ne` on an attribute of an undeclared extension, by its typed key.
fn extension_compare(
    path: &AttrPath,
    op: CompareOp,
    value: &CompValue,
    resource_type: &'static str,
) -> Planned {
    let (Some(urn), Some(key)) = (path.urn.as_deref(), literal_key(value)) else {
        return Planned::All;
    };
    let e = Expr::Ext {
        resource_type,
        path: index_path(urn, &path.name, path.sub.as_deref()),
        key,
        negated: false,
    };
    match (op, value) {
        (CompareOp::Eq, CompValue::Num(_)) => Planned::Superset(e),
        (CompareOp::Eq, _) => Planned::Exact(e),
        (CompareOp::Ne, CompValue::Str(_) | CompValue::Bool(_)) => Planned::Exact(negate(e)),
        _ => Planned::All,
    }
}

fn is_email_value(r: &Resolved, kind: ResourceKind) -> bool {
    kind == ResourceKind::User
        && r.location == Location::Core
        && r.attr.name == "emails"
        && r.sub.is_some_and(|s| s.name == "value")
}

/// `emails.value op s`: rows whose work email matches, plus every row holding another
/// email address (`email_overflow`), which only the evaluator can judge.
fn email(op: CompareOp, value: &CompValue) -> Planned {
    let CompValue::Str(s) = value else {
        return Planned::All;
    };
    let s = fold_case(s);
    let test = match op {
        CompareOp::Eq => Test::Eq(SqlBind::Text(s)),
        CompareOp::Sw | CompareOp::Ew | CompareOp::Co => Test::Like(like_pattern(op, &s)),
        _ => return Planned::All,
    };
    Planned::Superset(Expr::Or(vec![
        leaf("work_email_lower", test),
        leaf("email_overflow", Test::Eq(SqlBind::Bool(true))),
    ]))
}

/// `emails[… and value op s and …]` narrows like `emails.value op s`.
fn value_path(attr: &AttrPath, filter: &Filter, kind: ResourceKind) -> Planned {
    let rt = kind.resource_type();
    let Some(r) = resolve(Scope::Resource(rt), attr) else {
        return Planned::All;
    };
    if kind != ResourceKind::User || r.attr.name != "emails" || r.location != Location::Core {
        return Planned::All;
    }
    let terms: &[Filter] = match filter {
        Filter::And(v) => v,
        one => std::slice::from_ref(one),
    };
    terms
        .iter()
        .find_map(|t| match t {
            Filter::Compare { path, op, value } if path.name.eq_ignore_ascii_case("value") => {
                match email(*op, value) {
                    Planned::All => None,
                    p => Some(p),
                }
            }
            _ => None,
        })
        .unwrap_or(Planned::All)
}

fn like_pattern(op: CompareOp, s: &str) -> String {
    let mut esc = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            esc.push('\\');
        }
        esc.push(c);
    }
    match op {
        CompareOp::Sw => format!("{esc}%"),
        CompareOp::Ew => format!("%{esc}"),
        _ => format!("%{esc}%"),
    }
}

/// `hint`: SQLite's `likelihood` around `scim_ext_values` subqueries (see `sqlite_where_sql`).
fn render(e: &Expr, sql: &mut String, binds: &mut Vec<SqlBind>, hint: bool) {
    match e {
        Expr::And(v) | Expr::Or(v) => {
            let sep = if matches!(e, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push('(');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    sql.push_str(sep);
                }
                render(x, sql, binds, hint);
            }
            sql.push(')');
        }
        Expr::Ext {
            resource_type,
            path,
            key,
            negated,
        } => {
            if *negated {
                sql.push_str("NOT ");
            }
            let subquery = "t.id IN (SELECT e.resource_id FROM scim_ext_values e \
                 WHERE e.workspace_id = ? AND e.resource_type = ? AND e.path = ? AND e.value = ?)";
            if hint && !*negated {
                sql.push_str(&format!("likelihood({subquery}, 0.001)"));
            } else {
                sql.push_str(subquery);
            }
            binds.push(SqlBind::Workspace);
            binds.push(SqlBind::Text((*resource_type).to_owned()));
            binds.push(SqlBind::Text(path.clone()));
            binds.push(SqlBind::Text(key.clone()));
        }
        Expr::Leaf(Leaf { col, test, negated }) => match (test, negated) {
            (Test::Eq(b), false) => {
                sql.push_str(&format!("{col} = ?"));
                binds.push(b.clone());
            }
            (Test::Eq(b), true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} <> ?)"));
                binds.push(b.clone());
            }
            (Test::Like(p), false) => {
                sql.push_str(&format!("{col} LIKE ? ESCAPE '\\'"));
                binds.push(SqlBind::Text(p.clone()));
            }
            (Test::Like(p), true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} NOT LIKE ? ESCAPE '\\')"));
                binds.push(SqlBind::Text(p.clone()));
            }
            (Test::Present { text: true }, false) => {
                sql.push_str(&format!("({col} IS NOT NULL AND {col} <> ?)"));
                binds.push(SqlBind::Text(String::new()));
            }
            (Test::Present { text: true }, true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} = ?)"));
                binds.push(SqlBind::Text(String::new()));
            }
            (Test::Present { text: false }, false) => sql.push_str(&format!("{col} IS NOT NULL")),
            (Test::Present { text: false }, true) => sql.push_str(&format!("{col} IS NULL")),
        },
    }
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
