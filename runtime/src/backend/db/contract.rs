//! The behaviour every [`DbBackend`] must have, as one async test suite.
//!
//! It uses projects of its own (fresh ids per run) and purges them at the
//! end. It panics on the first deviation.

#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a call that fails is a test that fails"
)]

use super::{Call, CallError, CallLimits, DbBackend, DbError, MigrationError, Rows};
use crate::db::migrate::Removals;
use crate::db::query::{Condition, Filter, IsValue, Op, Operand, Order, Query, Value};
use crate::db::schema::{
    Column, ColumnDefault, ColumnType, DefaultKeyword, Index, Literal, Schema, Table,
};
use crate::db::sql::{Access, QueryLimits};
use crate::ids::ProjectId;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs the whole contract against `db`.
pub async fn db_contract(db: &dyn DbBackend) {
    values_round_trip_with_their_types(db).await;
    filters_order_limit_and_offset(db).await;
    updates_and_deletes_count_and_return(db).await;
    a_failed_batch_writes_nothing(db).await;
    constraint_messages_depend_on_the_key(db).await;
    projects_are_isolated_and_purged(db).await;
    a_slow_query_is_cancelled_at_its_timeout(db).await;
    a_queued_write_gives_up_with_busy(db).await;
    the_quota_stops_inserts(db).await;
    results_are_capped(db).await;
    migrations_add_refuse_drop_and_keep(db).await;
    a_failed_migration_changes_nothing(db).await;
    any_declared_names_coexist(db).await;
}

/// Tables named as a backend might name what it makes for another table
/// (its key's index, its identity sequence, a unique column's index).
async fn any_declared_names_coexist(db: &dyn DbBackend) {
    let project = fresh_project("names");
    let mut tables = vec![items()];
    for name in [
        "items_pkey",
        "items_id_seq",
        "items_email_key",
        "items_title_check",
    ] {
        let mut id = column("id", ColumnType::Integer);
        id.primary_key = true;
        tables.push(Table {
            name: name.into(),
            columns: vec![id],
            indexes: Vec::new(),
        });
    }
    db.migrate(&project, &schema_of(tables), Removals::Refuse)
        .await
        .unwrap();
    db.purge(&project).await.unwrap();
}

/// A project no other run uses.
fn fresh_project(tag: &str) -> ProjectId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ProjectId::new(&format!("dbc-{tag}-{nanos:x}")).expect("valid project id")
}

fn column(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable: false,
        default: None,
        primary_key: false,
        unique: false,
        sensitive: false,
        client_read: true,
        client_write: true,
    }
}

fn nullable(mut c: Column) -> Column {
    c.nullable = true;
    c
}

fn items() -> Table {
    let mut id = column("id", ColumnType::Integer);
    id.primary_key = true;
    let mut done = column("done", ColumnType::Boolean);
    done.default = Some(ColumnDefault::Value {
        value: Literal::Bool(false),
    });
    let mut created = column("created_at", ColumnType::Timestamp);
    created.default = Some(ColumnDefault::Keyword(DefaultKeyword::Now));
    let mut uid = column("uid", ColumnType::Uuid);
    uid.default = Some(ColumnDefault::Keyword(DefaultKeyword::RandomUuid));
    let mut email = nullable(column("email", ColumnType::Text));
    email.unique = true;
    email.sensitive = true;
    email.client_read = false;
    email.client_write = false;
    Table {
        name: "items".into(),
        columns: vec![
            id,
            column("title", ColumnType::Text),
            done,
            nullable(column("score", ColumnType::Real)),
            nullable(column("data", ColumnType::Blob)),
            nullable(column("meta", ColumnType::Json)),
            created,
            uid,
            email,
        ],
        indexes: vec![Index {
            columns: vec!["done".into()],
            unique: false,
        }],
    }
}

fn schema_of(tables: Vec<Table>) -> Arc<Schema> {
    Arc::new(Schema::new(tables).expect("valid schema"))
}

fn limits() -> CallLimits {
    CallLimits {
        query: QueryLimits::default(),
        timeout: Duration::from_secs(5),
        quota_bytes: 1 << 30,
        result_bytes: 16 << 20,
    }
}

/// A fresh project with `items` migrated in.
async fn project_with_items(db: &dyn DbBackend, tag: &str) -> (ProjectId, Arc<Schema>) {
    let project = fresh_project(tag);
    let schema = schema_of(vec![items()]);
    let steps = db
        .migrate(&project, &schema, Removals::Refuse)
        .await
        .unwrap();
    assert_eq!(steps, ["create table items", "create index on items(done)"]);
    (project, schema)
}

/// Runs `queries` with the project's own (server) access.
async fn batch(
    db: &dyn DbBackend,
    project: &ProjectId,
    schema: &Arc<Schema>,
    queries: Vec<Query>,
) -> Result<Vec<Rows>, CallError> {
    run(db, project, schema, Access::Server, queries).await
}

async fn run(
    db: &dyn DbBackend,
    project: &ProjectId,
    schema: &Arc<Schema>,
    access: Access,
    queries: Vec<Query>,
) -> Result<Vec<Rows>, CallError> {
    run_with(db, project, schema, access, queries, limits()).await
}

async fn run_with(
    db: &dyn DbBackend,
    project: &ProjectId,
    schema: &Arc<Schema>,
    access: Access,
    queries: Vec<Query>,
    limits: CallLimits,
) -> Result<Vec<Rows>, CallError> {
    let call = Call {
        schema: schema.clone(),
        access,
        queries,
        limits,
    };
    db.call(project, call).await
}

async fn one(db: &dyn DbBackend, project: &ProjectId, schema: &Arc<Schema>, query: Query) -> Rows {
    run(db, project, schema, Access::Server, vec![query])
        .await
        .unwrap()
        .remove(0)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn insert(columns: &[&str], rows: Vec<Vec<Value>>, returning: Option<&[&str]>) -> Query {
    Query::Insert {
        table: "items".into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        returning: returning.map(|r| r.iter().map(|c| c.to_string()).collect()),
    }
}

fn select(columns: &[&str], filter: Option<Filter>) -> Query {
    Query::Select {
        table: "items".into(),
        columns: Some(columns.iter().map(|c| c.to_string()).collect()),
        filter,
        order: vec![Order {
            column: "id".into(),
            descending: false,
        }],
        limit: None,
        offset: None,
    }
}

fn cond(column: &str, op: Op, value: Operand) -> Filter {
    Filter::Condition(Condition {
        column: column.into(),
        op,
        value,
    })
}

fn ids(rows: &Rows) -> Vec<i64> {
    rows.rows
        .iter()
        .map(|r| match r[0] {
            Value::S64(n) => n,
            ref other => panic!("not an id: {other:?}"),
        })
        .collect()
}

async fn count(db: &dyn DbBackend, project: &ProjectId, schema: &Arc<Schema>) -> usize {
    one(db, project, schema, select(&["id"], None))
        .await
        .rows
        .len()
}

async fn values_round_trip_with_their_types(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "types").await;
    let inserted = one(
        db,
        &project,
        &schema,
        insert(
            &["id", "title", "score", "data", "meta", "email"],
            vec![
                vec![
                    Value::S64(1),
                    text("it's; -- /* 'quoted' */ %_"),
                    Value::F64(2.5),
                    Value::Blob(vec![0, 255, 1]),
                    text(r#"{"a":[1,2]}"#),
                    text("a@example.com"),
                ],
                vec![
                    Value::S64(2),
                    text("ünïcödé ✓"),
                    Value::S64(3),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            ],
            Some(&["id", "title", "done", "score", "data", "meta"]),
        ),
    )
    .await;
    assert_eq!(inserted.affected, 2);
    assert_eq!(
        inserted.columns,
        ["id", "title", "done", "score", "data", "meta"]
    );
    assert_eq!(
        inserted.rows,
        [
            vec![
                Value::S64(1),
                text("it's; -- /* 'quoted' */ %_"),
                Value::Bool(false),
                Value::F64(2.5),
                Value::Blob(vec![0, 255, 1]),
                text(r#"{"a":[1,2]}"#),
            ],
            vec![
                Value::S64(2),
                text("ünïcödé ✓"),
                Value::Bool(false),
                Value::F64(3.0),
                Value::Null,
                Value::Null,
            ],
        ],
        "values come back as stored, booleans as booleans, integers widened for real columns"
    );

    // Computed defaults: a timestamp in the stored form, a v4 uuid.
    let defaults = one(db, &project, &schema, select(&["created_at", "uid"], None)).await;
    for row in &defaults.rows {
        let (Value::Text(at), Value::Text(uid)) = (&row[0], &row[1]) else {
            panic!("defaults are text: {row:?}");
        };
        assert!(crate::db::sql::is_timestamp(at), "{at}");
        assert!(
            crate::db::schema::is_uuid(uid) && uid.as_bytes()[14] == b'4',
            "{uid}"
        );
    }
    assert_ne!(defaults.rows[0][1], defaults.rows[1][1], "uuids differ");

    // `*` (no columns) is every column the key may read.
    let all = one(
        db,
        &project,
        &schema,
        Query::Select {
            table: "items".into(),
            columns: None,
            filter: None,
            order: Vec::new(),
            limit: Some(1),
            offset: None,
        },
    )
    .await;
    assert!(all.columns.contains(&"email".to_string()));
    let public = run(
        db,
        &project,
        &schema,
        Access::Public,
        vec![Query::Select {
            table: "items".into(),
            columns: None,
            filter: None,
            order: Vec::new(),
            limit: Some(1),
            offset: None,
        }],
    )
    .await
    .unwrap();
    assert!(!public[0].columns.contains(&"email".to_string()));
    assert_eq!(public[0].columns.len(), items().columns.len() - 1);

    // A select of no rows is no rows, with its columns.
    let none = one(
        db,
        &project,
        &schema,
        select(
            &["id"],
            Some(cond("id", Op::Eq, Operand::One(Value::S64(99)))),
        ),
    )
    .await;
    assert_eq!(none.columns, ["id"]);
    assert!(none.rows.is_empty());
    assert_eq!(none.affected, 0);
    db.purge(&project).await.unwrap();
}

async fn seed(db: &dyn DbBackend, project: &ProjectId, schema: &Arc<Schema>) {
    let rows = (1..=10)
        .map(|i| {
            vec![
                Value::S64(i),
                text(&format!(
                    "{} item {i}",
                    if i % 2 == 0 { "Even" } else { "odd" }
                )),
                Value::Bool(i % 3 == 0),
                if i == 10 {
                    Value::Null
                } else {
                    Value::F64(i as f64)
                },
            ]
        })
        .collect();
    one(
        db,
        project,
        schema,
        insert(&["id", "title", "done", "score"], rows, None),
    )
    .await;
}

async fn filters_order_limit_and_offset(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "filters").await;
    seed(db, &project, &schema).await;
    let one_value = |v: Value| Operand::One(v);
    let cases: Vec<(Filter, Vec<i64>)> = vec![
        (cond("id", Op::Eq, one_value(Value::S64(3))), vec![3]),
        (
            cond("id", Op::Neq, one_value(Value::S64(3))),
            vec![1, 2, 4, 5, 6, 7, 8, 9, 10],
        ),
        (cond("id", Op::Gt, one_value(Value::S64(8))), vec![9, 10]),
        (cond("id", Op::Gte, one_value(Value::S64(9))), vec![9, 10]),
        (
            cond("score", Op::Lt, one_value(Value::F64(2.5))),
            vec![1, 2],
        ),
        (cond("score", Op::Lte, one_value(Value::S64(2))), vec![1, 2]),
        (
            cond("title", Op::Like, one_value(text("Even%"))),
            vec![2, 4, 6, 8, 10],
        ),
        (cond("title", Op::Like, one_value(text("even%"))), vec![]),
        (
            cond("title", Op::Ilike, one_value(text("EVEN item _"))),
            vec![2, 4, 6, 8],
        ),
        (
            cond(
                "id",
                Op::In,
                Operand::List(vec![Value::S64(2), Value::S64(5), Value::S64(42)]),
            ),
            vec![2, 5],
        ),
        (cond("score", Op::Is, Operand::Is(IsValue::Null)), vec![10]),
        (
            cond("done", Op::Is, Operand::Is(IsValue::True)),
            vec![3, 6, 9],
        ),
        (
            cond("done", Op::Eq, one_value(Value::Bool(true))),
            vec![3, 6, 9],
        ),
        (
            Filter::Or(vec![
                cond("id", Op::Lt, one_value(Value::S64(2))),
                Filter::And(vec![
                    cond("done", Op::Is, Operand::Is(IsValue::True)),
                    cond("id", Op::Gt, one_value(Value::S64(5))),
                ]),
            ]),
            vec![1, 6, 9],
        ),
    ];
    for (filter, want) in cases {
        let rows = one(db, &project, &schema, select(&["id"], Some(filter.clone()))).await;
        assert_eq!(ids(&rows), want, "{filter:?}");
    }

    let page = one(
        db,
        &project,
        &schema,
        Query::Select {
            table: "items".into(),
            columns: Some(vec!["id".into()]),
            filter: None,
            order: vec![
                Order {
                    column: "done".into(),
                    descending: true,
                },
                Order {
                    column: "id".into(),
                    descending: true,
                },
            ],
            limit: Some(3),
            offset: Some(2),
        },
    )
    .await;
    assert_eq!(ids(&page), [3, 10, 8]);
    db.purge(&project).await.unwrap();
}

async fn updates_and_deletes_count_and_return(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "mutations").await;
    seed(db, &project, &schema).await;
    let updated = one(
        db,
        &project,
        &schema,
        Query::Update {
            table: "items".into(),
            set: vec![("done".into(), Value::Bool(true))],
            filter: Some(cond("id", Op::Lte, Operand::One(Value::S64(2)))),
            returning: Some(vec!["id".into(), "done".into()]),
        },
    )
    .await;
    assert_eq!(updated.affected, 2);
    let mut returned = updated.rows.clone();
    returned.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        returned,
        [
            vec![Value::S64(1), Value::Bool(true)],
            vec![Value::S64(2), Value::Bool(true)]
        ]
    );

    let deleted = one(
        db,
        &project,
        &schema,
        Query::Delete {
            table: "items".into(),
            filter: Some(cond("done", Op::Is, Operand::Is(IsValue::True))),
            returning: None,
        },
    )
    .await;
    assert_eq!(deleted.affected, 5, "1, 2, 3, 6, 9");
    assert!(deleted.rows.is_empty() && deleted.columns.is_empty());
    assert_eq!(count(db, &project, &schema).await, 5);

    let filterless = batch(
        db,
        &project,
        &schema,
        vec![Query::Delete {
            table: "items".into(),
            filter: None,
            returning: None,
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(filterless.error.code(), "FILTERLESS_MUTATION");
    assert_eq!(count(db, &project, &schema).await, 5);
    db.purge(&project).await.unwrap();
}

async fn a_failed_batch_writes_nothing(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "batch").await;
    let row = |id: i64| vec![Value::S64(id), text("t")];
    // The third query collides with the first: nothing of the batch stays.
    let err = batch(
        db,
        &project,
        &schema,
        vec![
            insert(&["id", "title"], vec![row(1)], None),
            insert(&["id", "title"], vec![row(2)], None),
            insert(&["id", "title"], vec![row(1)], None),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.index, Some(2));
    assert_eq!(err.error.code(), "CONSTRAINT_VIOLATION");
    assert_eq!(count(db, &project, &schema).await, 0);

    // A query the validator refuses stops the batch before anything runs.
    let err = batch(
        db,
        &project,
        &schema,
        vec![
            insert(&["id", "title"], vec![row(1)], None),
            select(&["nope"], None),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.index, Some(1));
    assert_eq!(err.error.code(), "COLUMN_NOT_FOUND");
    assert_eq!(count(db, &project, &schema).await, 0);

    // A good batch commits as a whole and answers each query in order.
    let results = batch(
        db,
        &project,
        &schema,
        vec![
            insert(&["id", "title"], vec![row(1), row(2)], None),
            select(&["id"], None),
        ],
    )
    .await
    .unwrap();
    assert_eq!(results[0].affected, 2);
    assert_eq!(ids(&results[1]), [1, 2], "a batch sees its own writes");
    db.purge(&project).await.unwrap();
}

async fn constraint_messages_depend_on_the_key(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "constraints").await;
    one(
        db,
        &project,
        &schema,
        insert(
            &["id", "title", "email"],
            vec![vec![Value::S64(1), text("t"), text("a@example.com")]],
            None,
        ),
    )
    .await;
    let duplicate_email = insert(
        &["id", "title", "email"],
        vec![vec![Value::S64(2), text("t"), text("a@example.com")]],
        None,
    );
    let server = run(db, &project, &schema, Access::Server, vec![duplicate_email])
        .await
        .unwrap_err();
    assert_eq!(server.error.code(), "CONSTRAINT_VIOLATION");
    assert!(
        server.error.to_string().contains("items.email"),
        "the project's own code learns which column: {}",
        server.error
    );

    // A public key inserting a duplicate id learns only the kind.
    let public = run(
        db,
        &project,
        &schema,
        Access::Public,
        vec![insert(
            &["id", "title"],
            vec![vec![Value::S64(1), text("t")]],
            None,
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(public.error.code(), "CONSTRAINT_VIOLATION");
    assert_eq!(
        public.error.to_string(),
        "a row with the same unique value already exists"
    );
    db.purge(&project).await.unwrap();
}

async fn projects_are_isolated_and_purged(db: &dyn DbBackend) {
    let (a, schema) = project_with_items(db, "iso-a").await;
    let (b, _) = project_with_items(db, "iso-b").await;
    seed(db, &a, &schema).await;
    assert_eq!(count(db, &a, &schema).await, 10);
    assert_eq!(
        count(db, &b, &schema).await,
        0,
        "same table name, other data"
    );
    assert!(db.usage(&a).await.unwrap() > 0);

    db.purge(&a).await.unwrap();
    let gone = run(db, &a, &schema, Access::Server, vec![select(&["id"], None)])
        .await
        .unwrap_err();
    assert_eq!(
        gone.error.code(),
        "DB_UNAVAILABLE",
        "a purged project has no tables until migrated again: {gone:?}"
    );
    db.migrate(&a, &schema, Removals::Refuse).await.unwrap();
    assert_eq!(
        count(db, &a, &schema).await,
        0,
        "a new project starts empty"
    );
    db.purge(&a).await.unwrap();
    db.purge(&b).await.unwrap();
}

/// A table of long texts and a filter that scans them many times over:
/// seconds of work unless cancelled.
async fn slow_setup(db: &dyn DbBackend, tag: &str) -> (ProjectId, Arc<Schema>, Filter, CallLimits) {
    let (project, schema) = project_with_items(db, tag).await;
    let long = "a".repeat(10_000);
    let rows = (1..=200)
        .map(|i| vec![Value::S64(i), Value::Text(long.clone())])
        .collect();
    one(db, &project, &schema, insert(&["id", "title"], rows, None)).await;
    // Distinct patterns: a planner may fold identical conditions into one.
    let slow = Filter::Or(
        (0..900)
            .map(|i| cond("title", Op::Like, Operand::One(text(&format!("%ab{i}%")))))
            .collect(),
    );
    let mut limits = limits();
    limits.query.max_filter_nodes = 1000;
    (project, schema, slow, limits)
}

async fn a_slow_query_is_cancelled_at_its_timeout(db: &dyn DbBackend) {
    let (project, schema, slow, mut limits) = slow_setup(db, "timeout").await;
    limits.timeout = Duration::from_millis(100);
    let started = Instant::now();
    let err = run_with(
        db,
        &project,
        &schema,
        Access::Server,
        vec![select(&["id"], Some(slow))],
        limits,
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.error, DbError::Timeout(100));
    assert_eq!(err.error.code(), "QUERY_TIMEOUT");
    assert!(
        took < Duration::from_secs(2),
        "cancelled at its timeout, not run to completion: {took:?}"
    );
    // The connection is fine afterwards.
    assert_eq!(count(db, &project, &schema).await, 200);
    db.purge(&project).await.unwrap();
}

async fn a_queued_write_gives_up_with_busy(db: &dyn DbBackend) {
    let (project, schema, slow, mut slow_limits) = slow_setup(db, "busy").await;
    slow_limits.timeout = Duration::from_millis(1500);
    let hog = run_with(
        db,
        &project,
        &schema,
        Access::Server,
        vec![Query::Update {
            table: "items".into(),
            set: vec![("title".into(), text("x"))],
            filter: Some(slow),
            returning: None,
        }],
        slow_limits,
    );
    let waiter = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut short = limits();
        short.timeout = Duration::from_millis(300);
        run_with(
            db,
            &project,
            &schema,
            Access::Server,
            vec![insert(
                &["id", "title"],
                vec![vec![Value::S64(1000), text("late")]],
                None,
            )],
            short,
        )
        .await
    };
    let (hog, waiter) = tokio::join!(hog, waiter);
    assert_eq!(hog.unwrap_err().error.code(), "QUERY_TIMEOUT");
    assert_eq!(waiter.unwrap_err().error, DbError::Busy);
    assert_eq!(count(db, &project, &schema).await, 200, "nothing written");
    db.purge(&project).await.unwrap();
}

async fn the_quota_stops_inserts(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "quota").await;
    let mut small = limits();
    small.quota_bytes = 256 * 1024;
    // Text no backend can compress, so sizes mean the same everywhere.
    let chunk = incompressible(8 * 1024);
    let mut stored = 0;
    let err = loop {
        let result = run_with(
            db,
            &project,
            &schema,
            Access::Server,
            vec![insert(
                &["id", "title"],
                vec![vec![Value::S64(stored + 1), Value::Text(chunk.clone())]],
                None,
            )],
            small,
        )
        .await;
        match result {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 64, "256 KiB cannot hold 64 × 8 KiB");
    };
    assert_eq!(err.error, DbError::QuotaExceeded);
    assert_eq!(err.error.code(), "QUOTA_EXCEEDED");
    assert!(stored >= 10, "the quota is the database's size: {stored}");
    assert_eq!(count(db, &project, &schema).await, stored as usize);
    let used = db.usage(&project).await.unwrap();
    assert!(used <= 256 * 1024, "{used} bytes after {stored} rows");

    // A quota lowered below the usage refuses growth, not deleting: the
    // project can always get back under it.
    let mut lowered = small;
    lowered.quota_bytes = 64 * 1024;
    run_with(
        db,
        &project,
        &schema,
        Access::Server,
        vec![Query::Delete {
            table: "items".into(),
            filter: Some(cond("id", Op::Gt, Operand::One(Value::S64(0)))),
            returning: None,
        }],
        lowered,
    )
    .await
    .unwrap();
    // Deleting makes room again.
    run_with(
        db,
        &project,
        &schema,
        Access::Server,
        vec![insert(
            &["id", "title"],
            vec![vec![Value::S64(1), Value::Text(chunk)]],
            None,
        )],
        small,
    )
    .await
    .unwrap();
    db.purge(&project).await.unwrap();
}

/// `len` pseudo-random hex digits.
fn incompressible(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state % 16) as usize])
        })
        .collect()
}

async fn results_are_capped(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "result").await;
    let rows = (1..=10)
        .map(|i| vec![Value::S64(i), Value::Text("r".repeat(1000))])
        .collect();
    one(db, &project, &schema, insert(&["id", "title"], rows, None)).await;
    let mut capped = limits();
    capped.result_bytes = 5000;
    let err = run_with(
        db,
        &project,
        &schema,
        Access::Server,
        vec![select(&["title"], None)],
        capped,
    )
    .await
    .unwrap_err();
    assert_eq!(err.error.code(), "QUERY_TOO_COMPLEX");
    assert!(
        err.error.to_string().contains("5000 bytes"),
        "{}",
        err.error
    );
    db.purge(&project).await.unwrap();
}

async fn migrations_add_refuse_drop_and_keep(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "migrate").await;
    seed(db, &project, &schema).await;
    assert!(
        db.migrate(&project, &schema, Removals::Refuse)
            .await
            .unwrap()
            .is_empty(),
        "the same schema again changes nothing"
    );

    // Add a column (old rows get its default), a table and an index.
    let mut wider = items();
    let mut priority = column("priority", ColumnType::Integer);
    priority.default = Some(ColumnDefault::Value {
        value: Literal::Integer(3),
    });
    wider.columns.push(priority);
    wider.indexes.push(Index {
        columns: vec!["priority".into(), "id".into()],
        unique: true,
    });
    let tags = Table {
        name: "tags".into(),
        columns: vec![column("name", ColumnType::Text)],
        indexes: Vec::new(),
    };
    let wider_schema = schema_of(vec![wider.clone(), tags.clone()]);
    let steps = db
        .migrate(&project, &wider_schema, Removals::Refuse)
        .await
        .unwrap();
    assert_eq!(
        steps,
        [
            "add column items.priority",
            "create index on items(priority, id)",
            "create table tags"
        ]
    );
    let rows = one(
        db,
        &project,
        &wider_schema,
        select(
            &["priority"],
            Some(cond("id", Op::Eq, Operand::One(Value::S64(1)))),
        ),
    )
    .await;
    assert_eq!(rows.rows, [vec![Value::S64(3)]]);

    // Dropping needs the flag; refused, nothing changes.
    let narrower = schema_of(vec![items()]);
    let refused = db
        .migrate(&project, &narrower, Removals::Refuse)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "MIGRATION_REFUSED");
    assert!(refused.to_string().contains("allow_destructive_migrations"));
    one(db, &project, &wider_schema, select(&["priority"], None)).await;

    // A rollback keeps what the newer build added.
    assert!(
        db.migrate(&project, &narrower, Removals::Keep)
            .await
            .unwrap()
            .is_empty()
    );
    one(db, &project, &wider_schema, select(&["priority"], None)).await;

    // With the flag, the column (and its index) and the table go.
    let steps = db
        .migrate(&project, &narrower, Removals::Drop)
        .await
        .unwrap();
    assert_eq!(
        steps,
        [
            "drop index on items(priority, id)",
            "drop column items.priority",
            "drop table tags"
        ]
    );
    let gone = run(
        db,
        &project,
        &wider_schema,
        Access::Server,
        vec![select(&["priority"], None)],
    )
    .await
    .unwrap_err();
    assert_eq!(gone.error.code(), "DB_UNAVAILABLE", "{gone:?}");
    assert_eq!(count(db, &project, &narrower).await, 10, "rows kept");
    db.purge(&project).await.unwrap();
}

async fn a_failed_migration_changes_nothing(db: &dyn DbBackend) {
    let (project, schema) = project_with_items(db, "failed").await;
    seed(db, &project, &schema).await;
    // `done` repeats, so a unique index on it cannot be built; the table
    // created before it in the same migration is rolled back too.
    let mut unique_done = items();
    unique_done.indexes = vec![Index {
        columns: vec!["done".into()],
        unique: true,
    }];
    let extra = Table {
        name: "extra".into(),
        columns: vec![column("x", ColumnType::Integer)],
        indexes: Vec::new(),
    };
    let bad = schema_of(vec![extra.clone(), unique_done]);
    let err = db
        .migrate(&project, &bad, Removals::Refuse)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrationError::Failed(_)),
        "{err:?}: {}",
        err.code()
    );
    assert_eq!(err.code(), "MIGRATION_FAILED");
    let extra_schema = schema_of(vec![extra]);
    let missing = run(
        db,
        &project,
        &extra_schema,
        Access::Server,
        vec![Query::Select {
            table: "extra".into(),
            columns: None,
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(
        missing.error.code(),
        "DB_UNAVAILABLE",
        "extra was rolled back"
    );
    assert_eq!(count(db, &project, &schema).await, 10);
    assert!(
        db.migrate(&project, &schema, Removals::Refuse)
            .await
            .unwrap()
            .is_empty(),
        "the recorded schema is still the old one"
    );
    db.purge(&project).await.unwrap();
}
