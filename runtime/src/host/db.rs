//! `switchyard:gateway/db` for guests: per-request call limits, then the
//! project's [`DbBackend`] with the guest's own (server) access.
//!
//! The project and its schema come from the request's host state; nothing
//! the guest passes can name another project's database.

use super::db_bindings::{self as wit, Error, ErrorCode};
use crate::backend::db::{Call, CallError, CallLimits, DbError, Rows};
use crate::db::query::{Condition, Filter, IsValue, Op, Operand, Order, Query, Value};
use crate::db::sql::{Access, QueryError, QueryLimits};
use crate::state::{RequestState, TenantCtx};
use std::time::Duration;
use wasmtime::component::{HasData, Linker};

/// Most queries in one batch (as over HTTP).
pub(crate) const MAX_BATCH: usize = 100;

/// What the db host functions may touch: the tenant (read-only) and this
/// request's call counter.
pub(crate) struct DbView<'a> {
    pub(crate) tenant: &'a TenantCtx,
    pub(crate) calls: &'a mut u32,
}

struct HasDb;

impl HasData for HasDb {
    type Data<'a> = DbView<'a>;
}

pub(crate) fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<RequestState, HasDb>(linker, RequestState::db)
}

impl DbView<'_> {
    async fn run(&mut self, queries: Vec<wit::Statement>) -> Result<Vec<Rows>, Error> {
        let t = self.tenant;
        if *self.calls >= t.limits.db_calls {
            return Err(error(
                ErrorCode::LimitExceeded,
                format!("this request has made its {} db calls", t.limits.db_calls),
                None,
            ));
        }
        *self.calls += 1;
        if queries.len() > MAX_BATCH {
            return Err(error(
                ErrorCode::QueryTooComplex,
                format!("a batch has at most {MAX_BATCH} queries"),
                None,
            ));
        }
        let query_limits = QueryLimits::default();
        let queries = queries
            .into_iter()
            .enumerate()
            .map(|(i, q)| from_wit(q, &query_limits).map_err(|e| CallError::at(i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_wit_error)?;
        let call = Call {
            schema: t.schema.clone(),
            access: Access::Server,
            queries,
            limits: CallLimits {
                query: query_limits,
                timeout: Duration::from_millis(t.limits.db_timeout_ms),
                quota_bytes: t.limits.db_quota_bytes,
                result_bytes: t.limits.db_result_bytes,
            },
        };
        t.db.call(&t.project, call).await.map_err(|e| {
            if let DbError::Unavailable { detail } = &e.error {
                tracing::warn!(project = %t.project, %detail, "gateway db failed");
            }
            to_wit_error(e)
        })
    }
}

impl wit::Host for DbView<'_> {
    async fn query(&mut self, query: wit::Statement) -> Result<wit::QueryResult, Error> {
        let mut results = self.run(vec![query]).await?;
        match results.pop() {
            Some(rows) => Ok(to_wit_rows(rows)),
            None => Err(error(ErrorCode::DbUnavailable, "no result".into(), None)),
        }
    }

    async fn batch(
        &mut self,
        queries: Vec<wit::Statement>,
    ) -> Result<Vec<wit::QueryResult>, Error> {
        let results = self.run(queries).await?;
        Ok(results.into_iter().map(to_wit_rows).collect())
    }
}

fn error(code: ErrorCode, message: String, index: Option<u32>) -> Error {
    Error {
        code,
        message,
        index,
    }
}

fn to_wit_error(e: CallError) -> Error {
    let code = match &e.error {
        DbError::Query(q) => match q {
            QueryError::TableNotFound(_) => ErrorCode::TableNotFound,
            QueryError::ColumnNotFound(_) => ErrorCode::ColumnNotFound,
            QueryError::ColumnNotAllowed(..) | QueryError::ReadOnlyTable(_) => {
                ErrorCode::ColumnNotAllowed
            }
            QueryError::InvalidValue(_) => ErrorCode::InvalidValue,
            QueryError::InvalidFilter(_) => ErrorCode::InvalidFilter,
            QueryError::FilterlessMutation => ErrorCode::FilterlessMutation,
            QueryError::TooComplex(_) => ErrorCode::QueryTooComplex,
        },
        DbError::ConstraintViolation(_) => ErrorCode::ConstraintViolation,
        DbError::Timeout(_) => ErrorCode::QueryTimeout,
        DbError::QuotaExceeded => ErrorCode::QuotaExceeded,
        DbError::Busy => ErrorCode::DbBusy,
        DbError::Unavailable { .. } => ErrorCode::DbUnavailable,
    };
    let index = e.index.map(|i| u32::try_from(i).unwrap_or(u32::MAX));
    error(code, e.error.to_string(), index)
}

fn to_wit_rows(rows: Rows) -> wit::QueryResult {
    wit::QueryResult {
        columns: rows.columns,
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(to_wit_value).collect())
            .collect(),
        affected: rows.affected,
    }
}

fn to_wit_value(value: Value) -> wit::Value {
    match value {
        Value::Null => wit::Value::Null,
        Value::Bool(b) => wit::Value::Bool(b),
        Value::S64(n) => wit::Value::S64(n),
        Value::F64(v) => wit::Value::F64(v),
        Value::Text(s) => wit::Value::Text(s),
        Value::Blob(b) => wit::Value::Blob(b),
    }
}

fn from_wit_value(value: wit::Value) -> Value {
    match value {
        wit::Value::Null => Value::Null,
        wit::Value::Bool(b) => Value::Bool(b),
        wit::Value::S64(n) => Value::S64(n),
        wit::Value::F64(v) => Value::F64(v),
        wit::Value::Text(s) => Value::Text(s),
        wit::Value::Blob(b) => Value::Blob(b),
    }
}

/// The contract's form of a guest's query.
fn from_wit(query: wit::Statement, limits: &QueryLimits) -> Result<Query, QueryError> {
    let filter = |f: Option<wit::Filter>| f.map(|f| filter_tree(f.nodes, limits)).transpose();
    Ok(match query {
        wit::Statement::Select(q) => Query::Select {
            table: q.table,
            columns: q.columns,
            filter: filter(q.filter)?,
            order: q
                .order
                .into_iter()
                .map(|o| Order {
                    column: o.column,
                    descending: o.descending,
                })
                .collect(),
            limit: q.limit,
            offset: q.offset,
        },
        wit::Statement::Insert(q) => Query::Insert {
            table: q.table,
            columns: q.columns,
            rows: q
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(from_wit_value).collect())
                .collect(),
            returning: q.returning,
        },
        wit::Statement::Update(q) => Query::Update {
            table: q.table,
            set: q
                .set
                .into_iter()
                .map(|(column, value)| (column, from_wit_value(value)))
                .collect(),
            filter: filter(q.filter)?,
            returning: q.returning,
        },
        wit::Statement::Delete(q) => Query::Delete {
            table: q.table,
            filter: filter(q.filter)?,
            returning: q.returning,
        },
    })
}

/// Rebuilds a filter tree from its flat form: node 0 is the root and each
/// other node is the child of exactly one earlier node, so the tree has no
/// cycles and no shared or stray nodes. Size is checked first, so the
/// recursion is bounded.
fn filter_tree(nodes: Vec<wit::FilterNode>, limits: &QueryLimits) -> Result<Filter, QueryError> {
    if nodes.is_empty() {
        return Err(QueryError::InvalidFilter("the filter has no nodes".into()));
    }
    if nodes.len() > limits.max_filter_nodes {
        return Err(QueryError::TooComplex(format!(
            "a filter may have at most {} nodes",
            limits.max_filter_nodes
        )));
    }
    let mut nodes: Vec<Option<wit::FilterNode>> = nodes.into_iter().map(Some).collect();
    let tree = take_node(&mut nodes, 0)?;
    if nodes.iter().any(Option::is_some) {
        return Err(QueryError::InvalidFilter(
            "every filter node but the first must be the child of one earlier node".into(),
        ));
    }
    Ok(tree)
}

fn take_node(nodes: &mut [Option<wit::FilterNode>], at: usize) -> Result<Filter, QueryError> {
    let broken = || QueryError::InvalidFilter(format!("filter node {at} is missing or used twice"));
    let node = nodes
        .get_mut(at)
        .and_then(Option::take)
        .ok_or_else(broken)?;
    let mut children = |list: Vec<u32>| {
        list.into_iter()
            .map(|child| {
                let child = child as usize;
                if child <= at {
                    return Err(QueryError::InvalidFilter(format!(
                        "filter node {at} lists node {child}: children must come after their parent"
                    )));
                }
                take_node(nodes, child)
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match node {
        wit::FilterNode::And(list) => Filter::And(children(list)?),
        wit::FilterNode::Or(list) => Filter::Or(children(list)?),
        wit::FilterNode::Condition(c) => Filter::Condition(Condition {
            column: c.column,
            op: match c.op {
                wit::Op::Eq => Op::Eq,
                wit::Op::Neq => Op::Neq,
                wit::Op::Gt => Op::Gt,
                wit::Op::Gte => Op::Gte,
                wit::Op::Lt => Op::Lt,
                wit::Op::Lte => Op::Lte,
                wit::Op::Like => Op::Like,
                wit::Op::Ilike => Op::Ilike,
                wit::Op::In => Op::In,
                wit::Op::Is => Op::Is,
            },
            value: match c.operand {
                wit::Operand::One(v) => Operand::One(from_wit_value(v)),
                wit::Operand::Many(list) => {
                    Operand::List(list.into_iter().map(from_wit_value).collect())
                }
                wit::Operand::Is(is) => Operand::Is(match is {
                    wit::IsValue::Null => IsValue::Null,
                    wit::IsValue::True => IsValue::True,
                    wit::IsValue::False => IsValue::False,
                }),
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProjectId;
    use crate::limits::Limits;
    use wit::FilterNode as N;

    fn select(table: &str) -> wit::Statement {
        wit::Statement::Select(wit::SelectQuery {
            table: table.into(),
            columns: None,
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
        })
    }

    #[tokio::test]
    async fn calls_count_against_the_request_limit_and_errors_keep_their_index() {
        let kv = std::sync::Arc::new(
            crate::backend::kv::SqliteKv::open(tempfile::tempdir().unwrap().path().join("kv"))
                .unwrap(),
        );
        let limits = Limits {
            db_calls: 2,
            ..Limits::default()
        };
        let tenant = TenantCtx::for_tests(ProjectId::new("p").unwrap(), limits, kv);
        let mut calls = 0;
        let mut view = DbView {
            tenant: &tenant,
            calls: &mut calls,
        };
        // No tables declared: refused by the validator, with the position.
        let err = wit::Host::batch(&mut view, vec![select("todos")])
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TableNotFound);
        assert_eq!(err.index, Some(0));
        assert_eq!(err.message, "table `todos` does not exist");
        let err = wit::Host::query(&mut view, select("todos"))
            .await
            .unwrap_err();
        assert_eq!((err.code, err.index), (ErrorCode::TableNotFound, Some(0)));
        let err = wit::Host::query(&mut view, select("todos"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        assert_eq!(err.index, None);
    }

    fn leaf(column: &str) -> N {
        N::Condition(wit::Condition {
            column: column.into(),
            op: wit::Op::Eq,
            operand: wit::Operand::One(wit::Value::S64(1)),
        })
    }

    fn tree(nodes: Vec<N>) -> Result<Filter, QueryError> {
        filter_tree(nodes, &QueryLimits::default())
    }

    #[test]
    fn flat_filters_become_trees() {
        let f = tree(vec![
            N::Or(vec![1, 2]),
            leaf("a"),
            N::And(vec![3, 4]),
            leaf("b"),
            leaf("c"),
        ])
        .unwrap();
        let Filter::Or(top) = f else { panic!("{f:?}") };
        assert_eq!(top.len(), 2);
        assert!(matches!(&top[1], Filter::And(inner) if inner.len() == 2));
    }

    #[test]
    fn broken_flat_filters_are_refused() {
        for (nodes, why) in [
            (vec![], "no nodes"),
            (vec![N::And(vec![0])], "after their parent"),
            (vec![N::And(vec![1, 1]), leaf("a")], "used twice"),
            (vec![N::And(vec![2]), leaf("a")], "missing"),
            (vec![leaf("a"), leaf("b")], "child of one earlier node"),
            (
                vec![N::And(vec![1, 2]), N::Or(vec![2]), leaf("a")],
                "used twice",
            ),
        ] {
            let err = tree(nodes).unwrap_err();
            assert_eq!(err.code(), "INVALID_FILTER");
            assert!(err.to_string().contains(why), "{err} lacks {why}");
        }
        let many = (0..65).map(|_| leaf("a")).collect();
        assert_eq!(tree(many).unwrap_err().code(), "QUERY_TOO_COMPLEX");
    }
}
