//! The built-in task kinds, each declared once as a [`TaskArgs`] type: its name, its
//! payload and the payload's rules. The api refuses a task whose kind or payload does not
//! fit (and serves [`Catalogue::describe`] at `GET /api/v1/kinds`), the worker runs each
//! kind with the payload already parsed into the same type, and the web UI builds its
//! kind lists and examples from what the api serves.
//!
//! A kind is added here (a type, and a line in [`Catalogue::all`]) and a handler for it in
//! the worker; a test there fails while the two lists differ.

use std::collections::BTreeMap;

use flowforge_queue::{InvalidArgs, TaskArgs};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// `noop`: does nothing; measures the queue's own overhead. Any JSON payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Noop(pub Value);

impl TaskArgs for Noop {
    const KIND: &'static str = "noop";
}

/// `echo`: completes with its payload (any JSON) as the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Echo(pub Value);

impl TaskArgs for Echo {
    const KIND: &'static str = "echo";
}

/// `sleep`: simulated work of `duration_ms` (at most an hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"duration_ms": 1500}))]
pub struct Sleep {
    /// Milliseconds, 0..=3600000.
    #[schema(maximum = 3_600_000)]
    pub duration_ms: u64,
}

impl Sleep {
    pub const MAX_MS: u64 = 3_600_000;
}

impl TaskArgs for Sleep {
    const KIND: &'static str = "sleep";
    fn validate(&self) -> Result<(), InvalidArgs> {
        if self.duration_ms > Self::MAX_MS {
            return Err(InvalidArgs::new("duration_ms", format!("must be at most {} (an hour)", Self::MAX_MS)));
        }
        Ok(())
    }
}

/// `fail`: fails (retryably) while `attempt <= fail_attempts` (always, when absent), then
/// succeeds: a way to watch retries, backoff and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"fail_attempts": 1, "message": "boom"}))]
pub struct Fail {
    pub fail_attempts: Option<i32>,
    #[serde(default = "default_failure_message")]
    #[schema(default = "simulated failure")]
    pub message: String,
}

fn default_failure_message() -> String {
    "simulated failure".into()
}

impl TaskArgs for Fail {
    const KIND: &'static str = "fail";
}

/// `webhook`: a signed request to `url` (see docs/api.md for how receivers verify it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/hook", "method": "POST", "body": {}}))]
pub struct Webhook {
    /// An http or https URL.
    #[schema(format = "uri")]
    pub url: String,
    #[serde(default)]
    #[schema(inline)]
    pub method: WebhookMethod,
    /// Sent as the JSON request body.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub body: Value,
    /// Extra request headers; framing headers are set by the worker.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WebhookMethod {
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// Headers the HTTP client derives from the request itself; a payload's own value
/// would contradict the body or the connection.
pub const FRAMING_HEADERS: [http::HeaderName; 4] =
    [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION, http::header::HOST];

impl Webhook {
    /// The target, which is known to parse and to be http(s).
    pub fn target(&self) -> url::Url {
        url::Url::parse(&self.url).expect("validated when the arguments were parsed")
    }

    /// The payload's headers, which are known to be valid.
    pub fn header_map(&self) -> http::HeaderMap {
        self.headers
            .iter()
            .map(|(name, value)| {
                let name = http::HeaderName::try_from(name).expect("validated header name");
                (name, http::HeaderValue::try_from(value).expect("validated header value"))
            })
            .collect()
    }
}

impl TaskArgs for Webhook {
    const KIND: &'static str = "webhook";
    fn validate(&self) -> Result<(), InvalidArgs> {
        let url = url::Url::parse(&self.url).map_err(|e| InvalidArgs::new("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidArgs::new("url", format!("must be http or https, not {}", url.scheme())));
        }
        for (name, value) in &self.headers {
            let field = || format!("headers.{name}");
            let parsed =
                http::HeaderName::try_from(name).map_err(|_| InvalidArgs::new(field(), "not a valid header name"))?;
            if FRAMING_HEADERS.contains(&parsed) {
                return Err(InvalidArgs::new(field(), "is set by the worker, not the payload"));
            }
            http::HeaderValue::try_from(value).map_err(|_| InvalidArgs::new(field(), "not a valid header value"))?;
        }
        Ok(())
    }
}

/// `panic` (chaos only): panics, to prove a handler bug costs one attempt, not the
/// worker. Any JSON payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Panic(pub Value);

impl TaskArgs for Panic {
    const KIND: &'static str = "panic";
}

/// `fill_scratch` (chaos only): writes `bytes` to the worker's scratch space and removes
/// them again, to prove a full scratch space fails only the task that hit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"bytes": 1048576}))]
pub struct FillScratch {
    pub bytes: u64,
}

impl TaskArgs for FillScratch {
    const KIND: &'static str = "fill_scratch";
}

/// One kind as the catalogue knows it.
pub struct KindSpec {
    pub kind: &'static str,
    pub summary: &'static str,
    /// Only for failure tests: accepted where chaos kinds are enabled.
    pub chaos: bool,
    schema: fn() -> Value,
    check: fn(&Value) -> Result<(), InvalidArgs>,
}

impl KindSpec {
    fn of<A: TaskArgs + ToSchema>(summary: &'static str, chaos: bool) -> KindSpec {
        KindSpec {
            kind: A::KIND,
            summary,
            chaos,
            schema: || serde_json::to_value(A::schema()).expect("a schema always serialises"),
            check: |payload| A::from_payload(payload).map(drop),
        }
    }

    /// The payload's JSON Schema.
    pub fn payload_schema(&self) -> Value {
        (self.schema)()
    }
}

/// [`Webhook`]'s schema, with what its header checks refuse said in it: names are HTTP
/// tokens other than the framing headers (any case), values hold no control characters
/// but tab.
fn webhook_schema() -> Value {
    let mut schema =
        serde_json::to_value(<Webhook as utoipa::PartialSchema>::schema()).expect("a schema always serialises");
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let framing: Vec<String> = FRAMING_HEADERS.iter().map(|h| any_case(h.as_str())).collect();
    schema["properties"]["headers"]["propertyNames"] = json!({
        "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        "not": {"pattern": format!("^({})$", framing.join("|"))}
    });
    schema["properties"]["headers"]["additionalProperties"] =
        json!({"type": "string", "pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$"});
    schema
}

/// What `GET /api/v1/kinds` says about a kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KindDescription {
    pub kind: &'static str,
    pub summary: &'static str,
    /// The JSON Schema a task's `payload` must fit.
    #[schema(value_type = Object)]
    pub payload_schema: Value,
    /// A payload that fits.
    #[schema(value_type = Object)]
    pub example: Value,
}

/// The kinds a deployment accepts.
pub struct Catalogue {
    kinds: Vec<KindSpec>,
}

/// Why a task's kind and payload were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownKind,
    Payload(InvalidArgs),
}

impl Catalogue {
    /// Every built-in kind; the chaos kinds only when `chaos` is set.
    pub fn all(chaos: bool) -> Catalogue {
        let kinds = vec![
            KindSpec::of::<Echo>("Completes with its payload as the result.", false),
            KindSpec::of::<Noop>("Does nothing.", false),
            KindSpec::of::<Sleep>("Waits duration_ms, then completes.", false),
            KindSpec::of::<Fail>("Fails fail_attempts times (always, without it), then completes.", false),
            KindSpec {
                schema: webhook_schema,
                ..KindSpec::of::<Webhook>("Sends a signed HTTP request to url.", false)
            },
            KindSpec::of::<Panic>("Panics (failure testing).", true),
            KindSpec::of::<FillScratch>("Fills the worker's scratch space with bytes (failure testing).", true),
        ];
        Catalogue { kinds: kinds.into_iter().filter(|k| chaos || !k.chaos).collect() }
    }

    pub fn get(&self, kind: &str) -> Option<&KindSpec> {
        self.kinds.iter().find(|k| k.kind == kind)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.iter().map(|k| k.kind)
    }

    /// Whether `payload` is a valid payload of `kind`.
    pub fn check(&self, kind: &str, payload: &Value) -> Result<(), Refusal> {
        let spec = self.get(kind).ok_or(Refusal::UnknownKind)?;
        (spec.check)(payload).map_err(Refusal::Payload)
    }

    /// Each kind with its summary, payload schema and an example payload.
    pub fn describe(&self) -> Vec<KindDescription> {
        self.kinds
            .iter()
            .map(|k| {
                let payload_schema = k.payload_schema();
                let example = payload_schema.get("example").cloned().unwrap_or_else(|| json!({}));
                KindDescription { kind: k.kind, summary: k.summary, payload_schema, example }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_a_valid_payload_of_its_kind() {
        let catalogue = Catalogue::all(true);
        for described in catalogue.describe() {
            assert_eq!(catalogue.check(described.kind, &described.example), Ok(()), "{}", described.kind);
            assert!(described.payload_schema.is_object(), "{}", described.kind);
        }
    }

    #[test]
    fn chaos_kinds_only_when_enabled() {
        assert_eq!(Catalogue::all(false).names().collect::<Vec<_>>(), ["echo", "noop", "sleep", "fail", "webhook"]);
        assert!(Catalogue::all(true).get("panic").is_some());
        assert_eq!(Catalogue::all(false).check("panic", &json!({})), Err(Refusal::UnknownKind));
    }

    #[test]
    fn payloads_are_checked_field_by_field() {
        let c = Catalogue::all(false);
        let refused = |kind: &str, payload: Value| match c.check(kind, &payload) {
            Err(Refusal::Payload(e)) => e.field,
            other => panic!("{kind} {payload}: {other:?}"),
        };
        assert_eq!(refused("sleep", json!({"duration_ms": 3_600_001})), "duration_ms");
        assert_eq!(refused("sleep", json!({"duration_ms": "5"})), "duration_ms");
        assert_eq!(refused("fail", json!({"fail_attempts": "two"})), "fail_attempts");
        assert_eq!(refused("webhook", json!({"url": "ftp://example.com/"})), "url");
        assert_eq!(refused("webhook", json!({"url": "https://x.test/", "method": "GET"})), "method");
        assert_eq!(refused("webhook", json!({"url": "https://x.test/", "headers": {"Host": "a"}})), "headers.Host");
        assert_eq!(refused("webhook", json!({"url": "https://x.test/", "headers": {"a b": "c"}})), "headers.a b");
        assert_eq!(c.check("echo", &json!([1, "anything"])), Ok(()));
        assert_eq!(c.check("no-such-kind", &json!({})), Err(Refusal::UnknownKind));
    }

    #[test]
    fn the_schema_says_what_the_type_accepts() {
        let sleep = Catalogue::all(false).get("sleep").unwrap().payload_schema();
        assert_eq!(sleep["required"], json!(["duration_ms"]));
        assert_eq!(sleep["properties"]["duration_ms"]["maximum"], json!(3_600_000));
        let webhook = Catalogue::all(false).get("webhook").unwrap().payload_schema();
        assert_eq!(webhook["properties"]["method"]["enum"], json!(["POST", "PUT"]));
    }
}
