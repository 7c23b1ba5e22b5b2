//! A search, resolved against the parameter registry and ready for a store to run: criteria
//! (ANDed), sort keys, a page size and a keyset cursor.

use super::index::{ParamKind, QueryValue};

/// A parameter as the store sees it: its code on a resource type and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    /// Parameter code (`family`, `_lastUpdated`, …).
    pub code: String,
    /// Its kind: which index table holds its values.
    pub kind: ParamKind,
}

/// How values of one parameter occurrence are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    /// The default for the kind.
    None,
    /// string `:exact`
    Exact,
    /// string `:contains`
    Contains,
    /// token `:text`
    Text,
    /// token `:not`
    Not,
    /// uri `:above`
    Above,
    /// uri `:below`
    Below,
    /// identifier `:of-type`
    OfType,
}

/// One criterion; a query ANDs its criteria.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// `_id`: the logical id is one of these.
    Ids(Vec<String>),
    /// The parameter has a value matching any of `values`.
    Match {
        /// The parameter.
        param: ParamRef,
        /// The modifier.
        modifier: Modifier,
        /// Values, ORed.
        values: Vec<QueryValue>,
    },
    /// `:missing=true|false`.
    Missing {
        /// The parameter.
        param: ParamRef,
        /// `true`: the resource has no value for it.
        missing: bool,
    },
    /// A composite parameter: some combination of its components matches one of the tuples.
    Composite {
        /// The composite parameter's code (component rows are stored as `code#k`).
        code: String,
        /// Each component's kind.
        kinds: Vec<ParamKind>,
        /// Tuples of component values, ORed.
        values: Vec<Vec<QueryValue>>,
    },
    /// Chained search: the reference parameter points at a `target_type` resource matching
    /// every inner criterion.
    Chain {
        /// The reference parameter on this type.
        param: ParamRef,
        /// The type it must point at.
        target_type: String,
        /// Criteria on the target.
        inner: Vec<Criterion>,
    },
    /// Any one of the groups matches (each group's criteria ANDed): access restrictions such as
    /// "in this patient's compartment", which span several parameters.
    AnyOf(Vec<Vec<Criterion>>),
    /// Reverse chaining (`_has`): some `source_type` resource whose `param` references this
    /// resource matches every inner criterion.
    Has {
        /// The referring type.
        source_type: String,
        /// Its reference parameter.
        param: ParamRef,
        /// Criteria on the referring resource.
        inner: Vec<Criterion>,
    },
    /// Criteria the access layer adds for one requester (what its consents release), ANDed.
    /// They are the same on each of its requests, so the SQL carries their values as literals
    /// and a plan the database keeps for the statement knows them.
    Policy(Vec<Criterion>),
}

/// A sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum SortBy {
    /// The logical id.
    Id,
    /// `meta.lastUpdated`.
    LastUpdated,
    /// A parameter's smallest (ascending) or largest (descending) value.
    Param(ParamRef),
}

/// A sort key with its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What to sort on.
    pub by: SortBy,
    /// Largest first.
    pub descending: bool,
}

/// A value a row had for a sort key (cursors carry them).
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// Integers (dates as ms, row ids).
    Int(i64),
    /// Numbers.
    Real(f64),
    /// Text.
    Text(String),
}

/// Where a page starts: strictly after (or, going back, strictly before) this row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The row's sort values, one per sort key.
    pub values: Vec<SortValue>,
    /// The row's store key (tie-break).
    pub row: i64,
    /// Page backwards (the rows before this one).
    pub backwards: bool,
}

/// A search to run.
#[derive(Debug, Clone)]
pub struct Query {
    /// Resource type searched.
    pub rtype: String,
    /// Criteria, ANDed.
    pub criteria: Vec<Criterion>,
    /// Sort keys; the store breaks ties by insertion order.
    pub sort: Vec<SortKey>,
    /// Page size.
    pub count: usize,
    /// Page position.
    pub cursor: Option<Cursor>,
    /// Count every match.
    pub with_total: bool,
}

/// One match with what a cursor needs.
#[derive(Debug, Clone)]
pub struct Match {
    /// The current version.
    pub version: super::Version,
    /// Sort values, one per sort key.
    pub sort_values: Vec<SortValue>,
    /// Store key.
    pub row: i64,
}

/// A page of matches.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matches in order.
    pub matches: Vec<Match>,
    /// More rows follow this page in the direction of travel.
    pub more: bool,
    /// Every match, when asked for.
    pub total: Option<u64>,
}
