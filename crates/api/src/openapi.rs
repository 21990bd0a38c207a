//! The OpenAPI document: what every route declares (its annotation, collected by the
//! routers in `routes`), plus the title, the bearer scheme and the tags here.

use std::ops::RangeInclusive;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use flowforge_kinds::Catalogue;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::config::ApiSettings;
use crate::requests::{
    DEFAULT_KIND, MAX_ATTEMPTS_RANGE, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, PRIORITY_RANGE, TIMEOUT_RANGE,
};
use serde_json::{json, Value};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "FlowForge API", description = "Tasks processed by a worker fleet on a PostgreSQL queue. \
        Every path under /tasks is also served under /api/v1/tasks."),
    modifiers(&BearerAuth),
    tags((name = "tasks"), (name = "accounts"), (name = "session", description = "The web UI's cookie session"),
         (name = "live", description = "Live task changes and operations metrics"),
         (name = "webhooks", description = "The secret that signs your webhook deliveries"), (name = "probes"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, serialised once at start.
#[derive(Clone)]
pub struct Document(Arc<String>);

impl Document {
    /// The routes' document, with what every route shares and what this deployment
    /// decides (the task kinds it runs) filled in.
    pub fn new(document: &utoipa::openapi::OpenApi, kinds: &Catalogue, settings: &ApiSettings) -> Document {
        let mut document = serde_json::to_value(document).expect("an OpenAPI document serialises");
        add_common_responses(&mut document);
        declare_kinds(&mut document, kinds);
        if let (Some(ttl), Some(field)) =
            (settings.token_ttl, document.pointer_mut("/components/schemas/CreateToken/properties/ttl_secs"))
        {
            field["maximum"] = json!(ttl.as_secs());
        }
        declare_task_bounds(&mut document, settings);
        require_title_with_put(&mut document);
        if let Some(tasks) = document.pointer_mut("/components/schemas/BulkCreate/properties/tasks") {
            tasks["minItems"] = json!(1);
            tasks["maxItems"] = json!(settings.bulk_max_tasks);
        }
        Document(Arc::new(document.to_string()))
    }
}

/// Answers any route may give besides its own, each with the error body: a path, query or
/// JSON body that does not parse (400), no valid credentials (401, routes that need them),
/// no such resource (404, routes with an id), a body too large, not JSON or not valid
/// (413, 415, 422), the caller's or the address's rate limit (429), and no capacity or
/// no answer in time (503).
fn add_common_responses(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            let secured = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            let with_body = operation.contains_key("requestBody");
            let mut common = vec![
                ("400", "The path, query or body does not parse"),
                ("429", "Rate limited; retry after the Retry-After header's seconds"),
                ("503", "Overloaded or not answered in time; retry after the Retry-After header's seconds"),
            ];
            if secured {
                common.push(("401", "No valid credentials"));
            }
            if path.contains('{') {
                common.push(("404", "No such resource visible to the caller"));
            }
            if with_body {
                common.push(("413", "The body is too large"));
                common.push(("415", "The body is not application/json"));
                common.push(("422", "The body does not fit the schema"));
            }
            let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut);
            let mut idempotent = false;
            for parameter in parameters.into_iter().flatten() {
                // Ids are positive: a schema that says so lets clients (and fuzzers) tell a
                // malformed id (400) from a missing one (404).
                if parameter["in"] == "path" && parameter["name"] == "id" {
                    parameter["schema"]["minimum"] = json!(1);
                }
                if parameter["name"] == "Idempotency-Key" {
                    parameter["schema"] = json!({"type": "string", "pattern": "^[!-~]{1,255}$"});
                    idempotent = true;
                }
            }
            if idempotent {
                common.push(("409", "The Idempotency-Key was used for another request, or its first use is in flight"));
            }
            if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                for (status, description) in common {
                    responses.entry(status).or_insert_with(|| {
                        json!({
                            "description": description,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                        })
                    });
                }
            }
        }
    }
}

/// No U+0000, which PostgreSQL stores in neither text nor jsonb.
const NO_NUL: &str = r"^[^\u0000]*$";

/// The bounds the checks in `requests` put on the task bodies' fields, from their
/// constants, for creations and changes alike. Priority's maximum is a user's cap here
/// (admins may go up to 100, as the field's description says).
fn declare_task_bounds(document: &mut Value, settings: &ApiSettings) {
    // 1..=200 characters, not all whitespace, no control characters.
    let title = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";
    let range = |r: RangeInclusive<i32>| json!({"minimum": r.start(), "maximum": r.end()});
    let bounds = [
        ("title", json!({"maxLength": MAX_TITLE_CHARS, "pattern": title})),
        ("description", json!({"maxLength": MAX_DESCRIPTION_CHARS, "pattern": NO_NUL})),
        ("priority", json!({"minimum": PRIORITY_RANGE.start(), "maximum": settings.user_max_priority})),
        ("max_attempts", range(MAX_ATTEMPTS_RANGE)),
        ("timeout_secs", range(TIMEOUT_RANGE)),
    ];
    for schema in ["CreateTask", "UpdateTask"] {
        let Some(fields) = document.pointer_mut(&format!("/components/schemas/{schema}/properties")) else { continue };
        for (field, bound) in &bounds {
            let Some(bound) = bound.as_object() else { continue };
            for (key, value) in bound {
                fields[*field][key] = value.clone();
            }
        }
    }
}

/// The kinds this deployment runs (they depend on whether the chaos kinds are on, so they
/// are set here, not in the types), and for each the payload it takes: a new task's
/// payload must fit its kind (`echo` when none is given); a change that names a kind must
/// bring a payload that fits it, or none (the task's own is then checked, 409 if it does
/// not fit).
fn declare_kinds(document: &mut Value, kinds: &Catalogue) {
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert("StorableJson".into(), storable_json());
    }
    let fitting = |kind: &str, payload_required: bool| {
        let mut schema = kinds.get(kind).map(|k| k.payload_schema()).unwrap_or_else(|| json!({}));
        storable_where_any(&mut schema);
        if payload_required {
            schema
        } else {
            json!({"anyOf": [{"type": "null"}, schema]})
        }
    };
    // Absent and null payloads are taken as `{}`.
    let takes_empty = |kind: &str| kinds.check(kind, &json!({})).is_ok();
    let mut create = vec![json!({
        "properties": {"kind": {"type": "null"}, "payload": fitting(DEFAULT_KIND, !takes_empty(DEFAULT_KIND))}
    })];
    // A change that keeps the kind: the payload is checked against the task's own kind
    // (409 if it does not fit), so the document can only say what any payload must be.
    let mut update = vec![json!({"properties": {
        "kind": {"type": "null"},
        "payload": {"anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/StorableJson"}]}
    }})];
    for kind in kinds.names() {
        let required: Vec<&str> = if takes_empty(kind) { vec!["kind"] } else { vec!["kind", "payload"] };
        create.push(json!({
            "properties": {"kind": {"const": kind}, "payload": fitting(kind, !takes_empty(kind))},
            "required": required
        }));
        update.push(json!({
            "properties": {"kind": {"const": kind}, "payload": fitting(kind, false)},
            "required": ["kind"]
        }));
    }
    for (schema, branches) in [("CreateTask", create), ("UpdateTask", update)] {
        if let Some(schema) = document.pointer_mut(&format!("/components/schemas/{schema}")) {
            schema["oneOf"] = Value::Array(branches);
        }
    }
}

/// Any JSON that PostgreSQL's `jsonb` stores and gives back as it was: no U+0000 in a
/// string or key, numbers within ±1e308 (the api refuses the rest).
fn storable_json() -> Value {
    let any = json!({"$ref": "#/components/schemas/StorableJson"});
    json!({
        "description": "Any JSON without U+0000 in strings or keys, with numbers within ±1e308.",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "number", "minimum": -1e308, "maximum": 1e308},
            {"type": "string", "pattern": NO_NUL},
            {"type": "array", "items": any},
            {"type": "object", "additionalProperties": any, "propertyNames": {"pattern": NO_NUL}}
        ]
    })
}

/// A payload schema's parts that take any JSON (no type, no alternatives) take what
/// PostgreSQL stores.
fn storable_where_any(schema: &mut Value) {
    let Some(fields) = schema.as_object_mut() else { return };
    let constrained = ["type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"];
    if !constrained.iter().any(|k| fields.contains_key(*k)) {
        fields.insert("$ref".into(), json!("#/components/schemas/StorableJson"));
        return;
    }
    for key in ["properties", "items", "additionalProperties", "anyOf", "oneOf", "allOf"] {
        match fields.get_mut(key) {
            Some(Value::Object(map)) if key == "properties" => map.values_mut().for_each(storable_where_any),
            Some(Value::Array(list)) => list.iter_mut().for_each(storable_where_any),
            Some(other @ Value::Object(_)) => storable_where_any(other),
            _ => {}
        }
    }
}

/// `PUT` replaces the editable fields, so it needs a title; `PATCH` shares the body type.
fn require_title_with_put(document: &mut Value) {
    if let Some(body) = document.pointer_mut("/paths/~1tasks~1{id}/put/requestBody/content/application~1json/schema") {
        *body = json!({"allOf": [body.clone(), {"required": ["title"], "properties": {"title": {"type": "string"}}}]});
    }
}

pub async fn serve(State(document): State<Document>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document.0.as_str().to_owned())
}
