//! The OpenAPI 3.1 document of the management API, generated from the
//! code with [`utoipa`].
//!
//! Request and answer types derive their schemas ([`crate::schema`]);
//! each handler carries `#[utoipa::path]` with its statuses, and
//! [`api_router`](crate::api::api_router) routes them through utoipa-axum's
//! `OpenApiRouter`, which takes a route's path and methods from that same
//! attribute, so a route cannot exist without its description. This module
//! adds what the derive macros cannot say: the bearer scheme, the statuses
//! every operation shares (401 from the token check, 413 from the body
//! limit), and the rules between keys of a launch or purge request.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder};

use crate::schema;

/// What the document says beyond its operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth management API",
        version = "1",
        description = "Launch containers serving web apps, and manage them. JSON in and out; errors are \
            `{\"error\": \"...\"}`. When the server has a bearer token every operation but `/healthz` needs it, \
            unless the host application's login already identified the caller."
    ),
    components(schemas(schema::ErrorBody, schema::LaunchEvent)),
    // A server without a token asks for none.
    security(("bearer" = []), ()),
    modifiers(&BearerScheme),
)]
pub(crate) struct ApiDoc;

/// Adds the `bearer` security scheme.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// An error answer of `description`, for the statuses added here.
fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
        .build()
        .into()
}

/// The operations of `doc`, with their paths and methods.
fn operations(doc: &mut Document) -> impl Iterator<Item = (&str, &'static str, &mut Operation)> {
    doc.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
            ("head", &mut item.head),
            ("options", &mut item.options),
            ("trace", &mut item.trace),
        ]
        .into_iter()
        .filter_map(move |(method, op)| op.as_mut().map(|op| (path.as_str(), method, op)))
    })
}

/// Completes the document of the API's operations (`paths`, as the
/// router collected them) into the one `/api/v1/openapi.json` serves.
pub(crate) fn complete(paths: Document) -> Document {
    let mut doc = ApiDoc::openapi().merge_from(paths);
    for (path, method, op) in operations(&mut doc) {
        let responses = &mut op.responses.responses;
        if path != "/healthz" {
            responses.insert("401".into(), error("a bearer token is required"));
        }
        if method == "post" {
            responses.insert("413".into(), error("body too large"));
        }
        // A hand-off link request may come without a body.
        if let (Some(body), "/api/v1/containers/{name}/links") = (&mut op.request_body, path) {
            body.required = Some(Required::False);
        }
        if path == "/api/v1/containers/{name}/events" {
            describe_events(op);
        }
    }
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    // A launch names a tool, or an image (whose tool the image-only keys
    // describe) and no tool; a tool launch refuses the image and its keys.
    // A key counts as given when it is not null, as serde reads it.
    let given = |key: &str| json!({"required": [key], "properties": {key: {"not": {"type": "null"}}}});
    let not_with_tool: Vec<Value> = ["image"].iter().chain(crate::api::IMAGE_ONLY_KEYS).map(|k| given(k)).collect();
    one_of(
        schemas.get_mut("LaunchRequest"),
        json!([
            {"required": ["tool"], "properties": {"tool": {"minLength": 1}}, "not": {"anyOf": not_with_tool}},
            {"allOf": [given("image")], "properties": {"tool": {"maxLength": 0}}},
        ]),
    );
    one_of(schemas.get_mut("PurgeRequest"), json!([given("label"), given("idle_secs")]));
    doc
}

/// Describes each event of the launch-progress stream. OpenAPI 3.1 has no
/// way to say what the events of a `text/event-stream` are; OpenAPI 3.2's
/// `itemSchema` (one schema per event: `event`, `data`, `id`, `retry`)
/// does, and tools that know it (schemathesis) check each event against
/// it. It goes in as an extension of the media type, where 3.2 puts it.
fn describe_events(op: &mut Operation) {
    let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") else { return };
    let Some(stream) = ok.content.get_mut("text/event-stream") else { return };
    stream.schema = None;
    let event = json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["creating", "starting", "waiting", "ready", "failed", "timeout"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/LaunchEvent"},
            },
        },
    });
    stream.extensions.get_or_insert_with(Extensions::default).insert("itemSchema".into(), event);
}

/// Rewrites rustdoc links (``[`Item`]``, ``[`Item`](path)``) in every
/// `description` and `summary` of `value` to plain code spans.
fn plain_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" || key == "summary" => *text = unlink(text),
                    _ => plain_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_descriptions),
        _ => {}
    }
}

/// ``[`Item`]`` and ``[`Item`](path)`` as `` `Item` ``.
fn unlink(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(end) = rest[start..].find("`]").map(|e| start + e) else { break };
        out.push_str(&rest[..start]);
        out.push_str(&rest[start + 1..end + 1]);
        rest = &rest[end + 2..];
        if rest.starts_with('(')
            && let Some(close) = rest.find(')')
        {
            rest = &rest[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Adds `oneOf` alternatives to an object schema. utoipa's object schema
/// has no `oneOf` beside its properties; its extensions are written into
/// the schema as they are, which is where JSON Schema expects the keyword.
fn one_of(schema: Option<&mut RefOr<Schema>>, alternatives: Value) {
    if let Some(RefOr::T(Schema::Object(object))) = schema {
        object.extensions.get_or_insert_with(Extensions::default).insert("oneOf".into(), alternatives);
    }
}

/// The document as JSON, as it is served: descriptions without rustdoc's
/// links (they come from doc comments), and this server's tool names as
/// the values `tool` may take in a tool launch (so clients and API
/// fuzzers know them; an image launch leaves `tool` empty).
pub(crate) fn to_json(doc: &Document, tools: &[&str]) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|e| json!({"error": e.to_string()}));
    plain_descriptions(&mut doc);
    let tool = doc.pointer_mut("/components/schemas/LaunchRequest/oneOf/0/properties/tool");
    if let (Some(Value::Object(tool)), false) = (tool, tools.is_empty()) {
        tool.insert("enum".into(), json!(tools));
    }
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn rustdoc_links_become_code_spans() {
        assert_eq!(super::unlink("see [`A`](crate::a) and [`B`]s, [x](y)"), "see `A` and `B`s, [x](y)");
        assert_eq!(super::unlink("[`open"), "[`open");
    }
}
