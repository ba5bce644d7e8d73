//! The filter language of RFC 7644 §3.4.2.2: a hand-written recursive-descent parser.
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
//! valuePath = attrPath "[" valFilter "]"
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! logExp    = FILTER SP ("and" / "or") SP FILTER        ; "and" binds tighter
//! ```
//!
//! Keywords and operators are case-insensitive (§3.4.2.2). As an extension widely sent
//! by clients, `emails[type eq "work"].value eq "x"` is accepted and read as
//! `emails[type eq "work" and value eq "x"]`.
//!
//! The parser is bounded (kanidm caps its filter depth for the same reason): input longer
//! than [`MAX_FILTER_LEN`] bytes or nesting deeper than [`MAX_FILTER_DEPTH`] is refused
//! with `invalidFilter` before any work proportional to it is done. `and`/`or` chains are
//! kept flat ([`Filter::And`] holds a list), so the tree's depth is bounded by the
//! nesting depth, not by the input length, and evaluating or dropping it cannot
//! overflow the stack.

use std::fmt;

use serde_json::Number;

use super::error::{ScimError, ScimType};
use super::lexer::{tokenize, Tok, Token};
use super::path::{parse_head, AttrPath, PatchPath, PathHead};

/// Longest filter (or PATCH path) accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value filters accepted.
pub const MAX_FILTER_DEPTH: usize = 64;

/// A comparison operator (RFC 7644 §3.4.2.2, Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// `gt ge lt le`: refused on boolean and binary attributes (RFC 7644 §3.4.2.2).
    pub fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    /// `co sw ew`: substring matches.
    pub fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }
}

/// A `compValue`: a JSON literal.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Str(s) => f.write_str(&serde_json::to_string(s).map_err(|_| fmt::Error)?),
            CompValue::Num(n) => write!(f, "{n}"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

/// A parsed filter. Parse with [`Filter::parse`] (syntax only) or
/// [`super::eval::compile`] (syntax checked against a resource type's schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Two or more terms, none itself an `And`.
    And(Vec<Filter>),
    /// Two or more terms, none itself an `Or`.
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    /// `attr[filter]`: some element of `attr` matches `filter`, whose paths name
    /// sub-attributes of `attr`.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
}

impl Filter {
    /// Parses a filter (RFC 7644 §3.4.2.2). Errors are `invalidFilter`.
    pub fn parse(input: &str) -> Result<Filter, ScimError> {
        let mut p = Parser::new(input, ScimType::InvalidFilter)?;
        let f = p.or(false)?;
        p.expect_end()?;
        Ok(f)
    }

    /// Whether the filter reads the top-level attribute `name` (case-insensitive), e.g.
    /// `members` or `groups`, which the storage keeps outside the resource document and
    /// must attach before evaluating.
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Filter::And(v) | Filter::Or(v) => v.iter().any(|f| f.mentions(name)),
            Filter::Not(f) => f.mentions(name),
            Filter::Present(p) | Filter::Compare { path: p, .. } => {
                p.name.eq_ignore_ascii_case(name)
            }
            Filter::ValuePath { attr, .. } => attr.name.eq_ignore_ascii_case(name),
        }
    }
}

/// Builds an `And` (flattening nested ones, so the parser's output is canonical).
pub(super) fn and_of(items: Vec<Filter>) -> Filter {
    join(items, true)
}

fn or_of(items: Vec<Filter>) -> Filter {
    join(items, false)
}

fn join(items: Vec<Filter>, and: bool) -> Filter {
    let mut flat = Vec::with_capacity(items.len());
    for f in items {
        match (f, and) {
            (Filter::And(v), true) | (Filter::Or(v), false) => flat.extend(v),
            (f, _) => flat.push(f),
        }
    }
    if flat.len() == 1 {
        return flat.pop().expect("one item");
    }
    if and {
        Filter::And(flat)
    } else {
        Filter::Or(flat)
    }
}

impl fmt::Display for Filter {
    /// The canonical text form; parsing it gives back an equal filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(v) | Filter::Or(v) => {
                let sep = if matches!(self, Filter::And(_)) {
                    " and "
                } else {
                    " or "
                };
                for (i, term) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    // Only an `or` under an `and` needs parentheses (precedence).
                    if matches!(term, Filter::Or(_)) {
                        write!(f, "({term})")?;
                    } else {
                        write!(f, "{term}")?;
                    }
                }
                Ok(())
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::ValuePath { attr, filter } => write!(f, "{attr}[{filter}]"),
        }
    }
}

/// The recursive-descent parser, shared with [`PatchPath::parse`].
pub(super) struct Parser<'a> {
    toks: Vec<Token<'a>>,
    i: usize,
    depth: usize,
    kind: ScimType,
    len: usize,
}

impl<'a> Parser<'a> {
    /// Checks the length bound and tokenizes. `kind` is the `scimType` of every error
    /// (`invalidFilter` for filters, `invalidPath` for PATCH paths).
    pub(super) fn new(input: &'a str, kind: ScimType) -> Result<Self, ScimError> {
        let what = if kind == ScimType::InvalidPath {
            "path"
        } else {
            "filter"
        };
        if input.len() > MAX_FILTER_LEN {
            return Err(ScimError::bad_request(
                kind,
                format!("{what} is longer than {MAX_FILTER_LEN} bytes"),
            ));
        }
        let toks =
            tokenize(input).map_err(|m| ScimError::bad_request(kind, format!("{what}: {m}")))?;
        if toks.is_empty() {
            return Err(ScimError::bad_request(kind, format!("{what} is empty")));
        }
        Ok(Parser {
            toks,
            i: 0,
            depth: 0,
            kind,
            len: input.len(),
        })
    }

    fn err(&self, msg: impl fmt::Display) -> ScimError {
        let what = if self.kind == ScimType::InvalidPath {
            "path"
        } else {
            "filter"
        };
        ScimError::bad_request(self.kind, format!("{what}: {msg}"))
    }

    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.len, |t| t.pos)
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.toks.get(self.i).map(|t| t.tok.clone());
        self.i += 1;
        t
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_FILTER_DEPTH} levels")));
        }
        Ok(())
    }

    fn expect(&mut self, want: &Tok<'_>, name: &str) -> Result<(), ScimError> {
        if self.peek() == Some(want) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {name} at byte {}", self.pos())))
        }
    }

    pub(super) fn expect_end(&self) -> Result<(), ScimError> {
        if self.i < self.toks.len() {
            return Err(self.err(format!("unexpected token at byte {}", self.pos())));
        }
        Ok(())
    }

    /// `or`-separated list of `and` terms.
    pub(super) fn or(&mut self, in_value_path: bool) -> Result<Filter, ScimError> {
        let mut terms = vec![self.and(in_value_path)?];
        while self.peek_keyword("or") {
            self.i += 1;
            terms.push(self.and(in_value_path)?);
        }
        Ok(or_of(terms))
    }

    fn and(&mut self, in_value_path: bool) -> Result<Filter, ScimError> {
        let mut terms = vec![self.unary(in_value_path)?];
        while self.peek_keyword("and") {
            self.i += 1;
            terms.push(self.unary(in_value_path)?);
        }
        Ok(and_of(terms))
    }

    fn unary(&mut self, in_value_path: bool) -> Result<Filter, ScimError> {
        let not = self.peek_keyword("not")
            && matches!(
                self.toks.get(self.i + 1),
                Some(Token {
                    tok: Tok::LParen,
                    ..
                })
            );
        if not {
            self.i += 1;
        }
        if self.peek() == Some(&Tok::LParen) {
            self.enter()?;
            self.i += 1;
            let inner = self.or(in_value_path)?;
            self.expect(&Tok::RParen, "')'")?;
            self.depth -= 1;
            return Ok(if not {
                Filter::Not(Box::new(inner))
            } else {
                inner
            });
        }
        self.attr_expr(in_value_path)
    }

    fn attr_path(&mut self) -> Result<AttrPath, ScimError> {
        let pos = self.pos();
        match self.next() {
            Some(Tok::Word(w)) if !w.starts_with('.') => {
                match parse_head(w).map_err(|m| self.err(m))? {
                    PathHead::Attr(a) => Ok(a),
                    PathHead::Schema(_) => {
                        Err(self.err(format!("a schema URN is not an attribute (byte {pos})")))
                    }
                }
            }
            _ => Err(self.err(format!("expected an attribute path at byte {pos}"))),
        }
    }

    /// `.sub` after a closing bracket.
    fn bracket_sub(&mut self) -> Result<Option<String>, ScimError> {
        let pos = self.pos();
        match self.peek() {
            Some(Tok::Word(w)) if w.starts_with('.') => {
                let name = &w[1..];
                let ok = matches!(
                    parse_head(name),
                    Ok(PathHead::Attr(AttrPath {
                        urn: None,
                        sub: None,
                        ..
                    }))
                );
                if !ok {
                    return Err(self.err(format!("invalid sub-attribute at byte {pos}")));
                }
                let name = name.to_owned();
                self.i += 1;
                Ok(Some(name))
            }
            _ => Ok(None),
        }
    }

    /// `[ valFilter ]`, having checked that a bracket may follow `attr`.
    fn value_filter(&mut self, attr: &AttrPath, in_value_path: bool) -> Result<Filter, ScimError> {
        if in_value_path {
            return Err(self.err(format!("value filters cannot nest (byte {})", self.pos())));
        }
        if attr.sub.is_some() {
            return Err(self.err(format!(
                "a value filter must follow an attribute, not a sub-attribute (byte {})",
                self.pos()
            )));
        }
        self.enter()?;
        self.i += 1;
        let inner = self.or(true)?;
        self.expect(&Tok::RBracket, "']'")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn attr_expr(&mut self, in_value_path: bool) -> Result<Filter, ScimError> {
        let attr = self.attr_path()?;
        if self.peek() != Some(&Tok::LBracket) {
            return self.condition(attr);
        }
        let inner = self.value_filter(&attr, in_value_path)?;
        let inner = match self.bracket_sub()? {
            // `emails[type eq "work"].value eq "x"` == `emails[type eq "work" and value eq "x"]`
            Some(sub) => and_of(vec![inner, self.condition(AttrPath::simple(&sub))?]),
            None => inner,
        };
        Ok(Filter::ValuePath {
            attr,
            filter: Box::new(inner),
        })
    }

    /// `pr`, or an operator and a value, after an attribute path.
    fn condition(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        let pos = self.pos();
        let op = match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("pr") => return Ok(Filter::Present(path)),
            Some(Tok::Word(w)) => CompareOp::from_word(w),
            _ => None,
        };
        let op = op.ok_or_else(|| self.err(format!("expected an operator at byte {pos}")))?;
        let pos = self.pos();
        let value = match self.next() {
            Some(Tok::Str(s)) => CompValue::Str(s),
            Some(Tok::Num(n)) => CompValue::Num(n),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => CompValue::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => CompValue::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => CompValue::Null,
            _ => {
                return Err(self.err(format!(
                    "expected a value (string, number, true, false or null) at byte {pos}"
                )))
            }
        };
        Ok(Filter::Compare { path, op, value })
    }

    /// A PATCH path: `attrPath`, a schema URN, or `attrPath[valFilter][.subAttr]`.
    pub(super) fn patch_path(&mut self) -> Result<PatchPath, ScimError> {
        let pos = self.pos();
        let attr = match self.next() {
            Some(Tok::Word(w)) if !w.starts_with('.') => {
                match parse_head(w).map_err(|m| self.err(m))? {
                    PathHead::Schema(urn) => return Ok(PatchPath::Schema(urn)),
                    PathHead::Attr(a) => a,
                }
            }
            _ => return Err(self.err(format!("expected an attribute path at byte {pos}"))),
        };
        if self.peek() != Some(&Tok::LBracket) {
            return Ok(PatchPath::Attr(attr));
        }
        let filter = self.value_filter(&attr, false)?;
        let sub = self.bracket_sub()?;
        Ok(PatchPath::Filtered { attr, filter, sub })
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
