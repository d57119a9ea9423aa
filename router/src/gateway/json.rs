//! The gateway database's contract as JSON, for HTTP clients: parsing
//! requests into [`Query`]s (strictly: an unknown key, a wrong type or an
//! out-of-range number is refused, never guessed at) and rendering results.
//! Whatever parses still goes through the one validator before any SQL
//! exists.
//!
//! A query names its operation and table in one key:
//!
//! ```json
//! {"select": "todos", "columns": ["id", "title"],
//!  "filter": {"and": [{"column": "done", "op": "eq", "value": false},
//!                     {"column": "title", "op": "ilike", "value": "%milk%"}]},
//!  "order": [{"column": "id", "descending": true}], "limit": 20, "offset": 0}
//! {"insert": "todos", "rows": [{"title": "milk"}], "returning": ["id"]}
//! {"update": "todos", "set": {"done": true}, "filter": {"column": "id", "op": "eq", "value": 3}}
//! {"delete": "todos", "filter": {"column": "done", "op": "is", "value": true}}
//! ```
//!
//! Values are JSON null, booleans, numbers (integers when they are whole
//! and fit 64 bits) and strings; `{"base64": "…"}` is a blob. In `rows`
//! and `set`, any other object or array is stored as JSON text (for `json`
//! columns). `in` takes an array, `is` takes `null`, `true` or `false`.
//! Results are `{"columns": […], "rows": [{column: value}], "affected": n}`,
//! blobs again as `{"base64": "…"}`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json};
use switchyard_runtime::backend::db::Rows;
use switchyard_runtime::db::query::{Condition, Filter, IsValue, Op, Operand, Order, Query, Value};

/// Why a JSON query is malformed (code `INVALID_QUERY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

impl JsonError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        "INVALID_QUERY"
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, JsonError> {
    Err(JsonError(message.into()))
}

/// A name as shown in an error: bounded and printable.
fn shown(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Parses one query.
pub fn query(json: &Json) -> Result<Query, JsonError> {
    let Json::Object(object) = json else {
        return bad("a query is a JSON object");
    };
    let operations: Vec<&str> = ["select", "insert", "update", "delete"]
        .into_iter()
        .filter(|op| object.contains_key(*op))
        .collect();
    let [operation] = operations.as_slice() else {
        return bad(
            "a query has exactly one of `select`, `insert`, `update`, `delete`, naming its table",
        );
    };
    let fields = Fields { object };
    let table = fields.string(operation)?;
    match *operation {
        "select" => {
            fields.only(&["select", "columns", "filter", "order", "limit", "offset"])?;
            Ok(Query::Select {
                table,
                columns: match object.get("columns") {
                    None | Some(Json::Null) => None,
                    Some(Json::String(star)) if star == "*" => None,
                    Some(_) => Some(fields.names("columns")?),
                },
                filter: fields.filter()?,
                order: fields.order()?,
                limit: fields.count("limit")?,
                offset: fields.count("offset")?,
            })
        }
        "insert" => {
            fields.only(&["insert", "rows", "returning"])?;
            let (columns, rows) = fields.rows()?;
            Ok(Query::Insert {
                table,
                columns,
                rows,
                returning: fields.returning()?,
            })
        }
        "update" => {
            fields.only(&["update", "set", "filter", "returning"])?;
            let Some(Json::Object(set)) = object.get("set") else {
                return bad("`set` is an object of column names to values");
            };
            Ok(Query::Update {
                table,
                set: set
                    .iter()
                    .map(|(column, value)| Ok((column.clone(), stored(value)?)))
                    .collect::<Result<_, JsonError>>()?,
                filter: fields.filter()?,
                returning: fields.returning()?,
            })
        }
        _ => {
            fields.only(&["delete", "filter", "returning"])?;
            Ok(Query::Delete {
                table,
                filter: fields.filter()?,
                returning: fields.returning()?,
            })
        }
    }
}

/// Parses a batch: `{"queries": [query, …]}`, at most `max` of them.
pub fn batch(json: &Json, max: usize) -> Result<Vec<Query>, JsonError> {
    let Json::Object(object) = json else {
        return bad("a batch is a JSON object with `queries`");
    };
    Fields { object }.only(&["queries"])?;
    let Some(Json::Array(queries)) = object.get("queries") else {
        return bad("`queries` is an array of queries");
    };
    if queries.is_empty() || queries.len() > max {
        return bad(format!("a batch has between 1 and {max} queries"));
    }
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| query(q).map_err(|e| JsonError(format!("query {i}: {}", e.0))))
        .collect()
}

/// The fields of one query object.
struct Fields<'a> {
    object: &'a Map<String, Json>,
}

impl Fields<'_> {
    fn only(&self, allowed: &[&str]) -> Result<(), JsonError> {
        match self.object.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => bad(format!("unknown field `{}`", shown(key))),
            None => Ok(()),
        }
    }

    fn string(&self, key: &str) -> Result<String, JsonError> {
        match self.object.get(key) {
            Some(Json::String(s)) => Ok(s.clone()),
            _ => bad(format!("`{key}` is a string")),
        }
    }

    fn names(&self, key: &str) -> Result<Vec<String>, JsonError> {
        let Some(Json::Array(items)) = self.object.get(key) else {
            return bad(format!("`{key}` is an array of column names"));
        };
        items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.clone()),
                _ => bad(format!("`{key}` is an array of column names")),
            })
            .collect()
    }

    fn returning(&self) -> Result<Option<Vec<String>>, JsonError> {
        match self.object.get("returning") {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(star)) if star == "*" => Ok(Some(vec!["*".into()])),
            Some(_) => self.names("returning").map(Some),
        }
    }

    /// A limit or offset: a whole number from 0 to 2³² − 1.
    fn count(&self, key: &str) -> Result<Option<u32>, JsonError> {
        match self.object.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => bad(format!("`{key}` is a whole number from 0 to {}", u32::MAX)),
            },
            Some(_) => bad(format!("`{key}` is a whole number")),
        }
    }

    fn filter(&self) -> Result<Option<Filter>, JsonError> {
        match self.object.get("filter") {
            None | Some(Json::Null) => Ok(None),
            Some(f) => filter(f).map(Some),
        }
    }

    fn order(&self) -> Result<Vec<Order>, JsonError> {
        let Some(order) = self.object.get("order") else {
            return Ok(Vec::new());
        };
        let Json::Array(keys) = order else {
            return bad("`order` is an array of {\"column\", \"descending\"}");
        };
        keys.iter()
            .map(|key| {
                let Json::Object(key) = key else {
                    return bad("`order` is an array of {\"column\", \"descending\"}");
                };
                let fields = Fields { object: key };
                fields.only(&["column", "descending"])?;
                Ok(Order {
                    column: fields.string("column")?,
                    descending: match key.get("descending") {
                        None => false,
                        Some(Json::Bool(b)) => *b,
                        Some(_) => return bad("`descending` is a boolean"),
                    },
                })
            })
            .collect()
    }

    /// `rows`: objects with the same keys; the columns and the values in
    /// their order.
    fn rows(&self) -> Result<(Vec<String>, Vec<Vec<Value>>), JsonError> {
        let Some(Json::Array(rows)) = self.object.get("rows") else {
            return bad("`rows` is an array of objects of column names to values");
        };
        let mut columns: Option<Vec<String>> = None;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let Json::Object(row) = row else {
                return bad("`rows` is an array of objects of column names to values");
            };
            let names: Vec<String> = row.keys().cloned().collect();
            match &columns {
                Some(first) if *first != names => {
                    return bad("every row of an insert has the same columns");
                }
                Some(_) => {}
                None => columns = Some(names),
            }
            values.push(row.values().map(stored).collect::<Result<_, _>>()?);
        }
        Ok((columns.unwrap_or_default(), values))
    }
}

/// A filter: `{"and": […]}`, `{"or": […]}` or a condition. Nesting is
/// bounded by the JSON parser's depth limit here and by the validator's
/// depth cap after.
fn filter(json: &Json) -> Result<Filter, JsonError> {
    let Json::Object(object) = json else {
        return bad("a filter is an object: {\"and\": […]}, {\"or\": […]} or a condition");
    };
    let fields = Fields { object };
    for (key, combine) in [("and", Filter::And as fn(_) -> _), ("or", Filter::Or)] {
        if let Some(children) = object.get(key) {
            fields.only(&[key])?;
            let Json::Array(children) = children else {
                return bad(format!("`{key}` is an array of filters"));
            };
            return Ok(combine(
                children.iter().map(filter).collect::<Result<_, _>>()?,
            ));
        }
    }
    fields.only(&["column", "op", "value"])?;
    let column = fields.string("column")?;
    let op = match fields.string("op")?.as_str() {
        "eq" => Op::Eq,
        "neq" => Op::Neq,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "like" => Op::Like,
        "ilike" => Op::Ilike,
        "in" => Op::In,
        "is" => Op::Is,
        other => {
            return bad(format!(
                "unknown op `{}`: use eq, neq, gt, gte, lt, lte, like, ilike, in or is",
                shown(other)
            ));
        }
    };
    let value = object.get("value").unwrap_or(&Json::Null);
    let value = match op {
        Op::Is => Operand::Is(match value {
            Json::Null => IsValue::Null,
            Json::Bool(true) => IsValue::True,
            Json::Bool(false) => IsValue::False,
            _ => return bad("`is` takes null, true or false"),
        }),
        Op::In => {
            let Json::Array(values) = value else {
                return bad("`in` takes an array of values");
            };
            Operand::List(values.iter().map(scalar).collect::<Result<_, _>>()?)
        }
        _ => Operand::One(scalar(value)?),
    };
    Ok(Filter::Condition(Condition { column, op, value }))
}

/// A value compared in a filter: a scalar or a blob.
fn scalar(json: &Json) -> Result<Value, JsonError> {
    match json {
        Json::Array(_) => bad("a value here is a scalar, not an array"),
        Json::Object(_) => {
            blob(json)?.map_or_else(|| bad("a value here is a scalar or {\"base64\": …}"), Ok)
        }
        other => stored(other),
    }
}

/// A value to store: scalars, blobs, and other objects and arrays as JSON
/// text.
fn stored(json: &Json) -> Result<Value, JsonError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::S64(i),
            (None, _) if n.is_u64() => return bad("an integer is out of the 64-bit signed range"),
            (None, Some(f)) => Value::F64(f),
            (None, None) => return bad("a number is out of range"),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(_) => match blob(json)? {
            Some(blob) => blob,
            None => Value::Text(json.to_string()),
        },
        Json::Array(_) => Value::Text(json.to_string()),
    })
}

/// `{"base64": "…"}` as a blob; `None` for any other object.
fn blob(json: &Json) -> Result<Option<Value>, JsonError> {
    let Json::Object(object) = json else {
        return Ok(None);
    };
    match (object.len(), object.get("base64")) {
        (1, Some(Json::String(text))) => BASE64
            .decode(text)
            .map(|bytes| Some(Value::Blob(bytes)))
            .or_else(|_| bad("`base64` is not valid base64")),
        _ => Ok(None),
    }
}

/// A result as JSON: rows as objects keyed by column.
pub fn rows(rows: Rows) -> Json {
    let columns = rows.columns;
    let objects: Vec<Json> = rows
        .rows
        .into_iter()
        .map(|row| {
            Json::Object(
                columns
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(value))
                    .collect(),
            )
        })
        .collect();
    serde_json::json!({ "columns": columns, "rows": objects, "affected": rows.affected })
}

fn value(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::S64(n) => n.into(),
        Value::F64(v) => serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s),
        Value::Blob(b) => serde_json::json!({ "base64": BASE64.encode(b) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(json: Json) -> Result<Query, String> {
        query(&json).map_err(|e| e.to_string())
    }

    #[test]
    fn the_four_operations_parse() {
        assert_eq!(
            parse(json!({
                "select": "todos", "columns": ["id", "title"],
                "filter": {"and": [
                    {"column": "done", "op": "eq", "value": false},
                    {"or": [
                        {"column": "id", "op": "in", "value": [1, 2]},
                        {"column": "note", "op": "is", "value": null},
                    ]},
                ]},
                "order": [{"column": "id", "descending": true}, {"column": "title"}],
                "limit": 20, "offset": 5,
            })),
            Ok(Query::Select {
                table: "todos".into(),
                columns: Some(vec!["id".into(), "title".into()]),
                filter: Some(Filter::And(vec![
                    Filter::Condition(Condition {
                        column: "done".into(),
                        op: Op::Eq,
                        value: Operand::One(Value::Bool(false)),
                    }),
                    Filter::Or(vec![
                        Filter::Condition(Condition {
                            column: "id".into(),
                            op: Op::In,
                            value: Operand::List(vec![Value::S64(1), Value::S64(2)]),
                        }),
                        Filter::Condition(Condition {
                            column: "note".into(),
                            op: Op::Is,
                            value: Operand::Is(IsValue::Null),
                        }),
                    ]),
                ])),
                order: vec![
                    Order {
                        column: "id".into(),
                        descending: true
                    },
                    Order {
                        column: "title".into(),
                        descending: false
                    },
                ],
                limit: Some(20),
                offset: Some(5),
            })
        );
        assert_eq!(
            parse(json!({
                "insert": "todos",
                "rows": [{"title": "a", "data": {"base64": "AAH/"}, "meta": {"k": [1]}, "score": 1.5}],
                "returning": "*",
            })),
            Ok(Query::Insert {
                table: "todos".into(),
                columns: vec!["data".into(), "meta".into(), "score".into(), "title".into()],
                rows: vec![vec![
                    Value::Blob(vec![0, 1, 255]),
                    Value::Text(r#"{"k":[1]}"#.into()),
                    Value::F64(1.5),
                    Value::Text("a".into()),
                ]],
                returning: Some(vec!["*".into()]),
            })
        );
        assert!(matches!(
            parse(json!({"update": "todos", "set": {"done": true}, "filter": {"column": "id", "op": "eq", "value": 1}})),
            Ok(Query::Update { set, filter: Some(_), .. }) if set == [("done".to_string(), Value::Bool(true))]
        ));
        assert!(matches!(
            parse(json!({"delete": "todos"})),
            Ok(Query::Delete { filter: None, .. })
        ));
    }

    #[test]
    fn malformed_queries_are_refused_not_guessed() {
        for (json, why) in [
            (json!([]), "a query is a JSON object"),
            (json!({"select": "a", "delete": "a"}), "exactly one of"),
            (json!({"select": 3}), "`select` is a string"),
            (json!({"select": "a", "where": {}}), "unknown field `where`"),
            (
                json!({"select": "a", "limit": -1}),
                "`limit` is a whole number",
            ),
            (
                json!({"select": "a", "limit": 1.5}),
                "`limit` is a whole number",
            ),
            (
                json!({"select": "a", "offset": 4294967296u64}),
                "`offset` is a whole number",
            ),
            (
                json!({"select": "a", "order": ["id desc"]}),
                "`order` is an array",
            ),
            (
                json!({"select": "a", "order": [{"column": "id", "descending": "yes"}]}),
                "`descending` is a boolean",
            ),
            (
                json!({"select": "a", "columns": "id"}),
                "array of column names",
            ),
            (
                json!({"select": "a", "filter": {"column": "id", "op": "=", "value": 1}}),
                "unknown op `=`",
            ),
            (
                json!({"select": "a", "filter": {"column": "id", "op": "is", "value": 1}}),
                "`is` takes null",
            ),
            (
                json!({"select": "a", "filter": {"column": "id", "op": "in", "value": 1}}),
                "`in` takes an array",
            ),
            (
                json!({"select": "a", "filter": {"column": "id", "op": "eq", "value": [1]}}),
                "not an array",
            ),
            (
                json!({"select": "a", "filter": {"column": "id", "op": "eq", "value": {"x": 1}}}),
                "scalar",
            ),
            (
                json!({"select": "a", "filter": {"and": {}}}),
                "`and` is an array",
            ),
            (
                json!({"select": "a", "filter": {"and": [], "or": []}}),
                "unknown field",
            ),
            (
                json!({"insert": "a", "rows": [{"a": 1}, {"b": 1}]}),
                "same columns",
            ),
            (
                json!({"insert": "a", "rows": {"a": 1}}),
                "`rows` is an array",
            ),
            (
                json!({"insert": "a", "rows": [{"a": 18446744073709551615u64}]}),
                "out of the 64-bit",
            ),
            (
                json!({"insert": "a", "rows": [{"a": {"base64": "!!"}}]}),
                "not valid base64",
            ),
            (json!({"update": "a", "set": [1]}), "`set` is an object"),
        ] {
            let err = parse(json.clone()).unwrap_err();
            assert!(err.contains(why), "{json}: {err} lacks {why}");
        }
    }

    #[test]
    fn injection_shaped_input_stays_data() {
        // Names are passed on as given (the validator refuses undeclared
        // ones); values are values, never SQL.
        let q = parse(json!({
            "select": "todos\"; DROP TABLE todos; --",
            "columns": ["id\" FROM sqlite_master --"],
            "filter": {"column": "title", "op": "eq", "value": "'; DELETE FROM todos; --"},
        }))
        .unwrap();
        let Query::Select {
            table,
            columns,
            filter,
            ..
        } = q
        else {
            panic!("a select");
        };
        assert_eq!(table, "todos\"; DROP TABLE todos; --");
        assert_eq!(columns.unwrap(), ["id\" FROM sqlite_master --"]);
        let Some(Filter::Condition(c)) = filter else {
            panic!("a condition");
        };
        assert_eq!(
            c.value,
            Operand::One(Value::Text("'; DELETE FROM todos; --".into()))
        );
    }

    #[test]
    fn batches_are_bounded_and_errors_say_which_query() {
        let one = json!({"select": "a"});
        assert_eq!(batch(&json!({"queries": [one, one]}), 10).unwrap().len(), 2);
        assert!(batch(&json!({"queries": []}), 10).is_err());
        let many: Vec<Json> = (0..11).map(|_| one.clone()).collect();
        assert!(batch(&json!({ "queries": many }), 10).is_err());
        let err = batch(&json!({"queries": [one, {"select": 1}]}), 10).unwrap_err();
        assert!(err.to_string().starts_with("query 1:"), "{err}");
        assert!(batch(&json!({"queries": [one], "x": 1}), 10).is_err());
    }

    #[test]
    fn results_render_rows_as_objects() {
        let rendered = rows(Rows {
            columns: vec!["id".into(), "done".into(), "data".into(), "score".into()],
            rows: vec![vec![
                Value::S64(1),
                Value::Bool(true),
                Value::Blob(vec![0, 1, 255]),
                Value::F64(0.5),
            ]],
            affected: 0,
        });
        assert_eq!(
            rendered,
            json!({
                "columns": ["id", "done", "data", "score"],
                "rows": [{"id": 1, "done": true, "data": {"base64": "AAH/"}, "score": 0.5}],
                "affected": 0,
            })
        );
    }
}
