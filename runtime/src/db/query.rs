//! The structured query contract: what a guest (over WIT) or a browser
//! client (over the HTTP gateway) may ask of a project's tables. Nothing in
//! it is SQL; [`super::sql`] checks a query against the schema and the
//! caller's access, and only then turns it into a statement.

/// A typed value, bound as a parameter, never spliced into SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    S64(i64),
    /// A 64-bit float.
    F64(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// One operation on one table.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// Read rows.
    Select {
        /// The table.
        table: String,
        /// The columns; `None` means every column the caller may read.
        columns: Option<Vec<String>>,
        /// Which rows.
        filter: Option<Filter>,
        /// Sort order, first key first.
        order: Vec<Order>,
        /// At most this many rows (capped).
        limit: Option<u32>,
        /// Skip this many rows first.
        offset: Option<u32>,
    },
    /// Add rows.
    Insert {
        /// The table.
        table: String,
        /// The columns each row gives, in order.
        columns: Vec<String>,
        /// The rows, each with one value per column.
        rows: Vec<Vec<Value>>,
        /// Columns of the inserted rows to return.
        returning: Option<Vec<String>>,
    },
    /// Change rows; a filter is required.
    Update {
        /// The table.
        table: String,
        /// Column = value assignments.
        set: Vec<(String, Value)>,
        /// Which rows.
        filter: Option<Filter>,
        /// Columns of the changed rows to return.
        returning: Option<Vec<String>>,
    },
    /// Remove rows; a filter is required.
    Delete {
        /// The table.
        table: String,
        /// Which rows.
        filter: Option<Filter>,
        /// Columns of the removed rows to return.
        returning: Option<Vec<String>>,
    },
}

/// A condition on rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// All of them hold.
    And(Vec<Filter>),
    /// At least one holds.
    Or(Vec<Filter>),
    /// A comparison of one column.
    Condition(Condition),
}

/// `column op operand`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The column.
    pub column: String,
    /// The comparison.
    pub op: Op,
    /// What it is compared with.
    pub value: Operand,
}

/// The comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal (never null: use `is`).
    Eq,
    /// Not equal.
    Neq,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// A pattern (`%` any run, `_` one character), case-sensitive.
    Like,
    /// A pattern, ignoring ASCII case.
    Ilike,
    /// One of a list.
    In,
    /// Is null / true / false.
    Is,
}

/// The right-hand side of a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// For `is`.
    Is(IsValue),
    /// For `in`.
    List(Vec<Value>),
    /// For every other comparison.
    One(Value),
}

/// What `is` may test for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsValue {
    /// SQL null.
    Null,
    /// True.
    True,
    /// False.
    False,
}

/// One sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
}

impl Query {
    /// The table the query is on.
    pub fn table(&self) -> &str {
        match self {
            Query::Select { table, .. }
            | Query::Insert { table, .. }
            | Query::Update { table, .. }
            | Query::Delete { table, .. } => table,
        }
    }
}
