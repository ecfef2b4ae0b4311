//! The OpenAPI 3.1 documents of both APIs, built from the tables the handlers and tests share:
//! the resize parameters below (a test proves each is accepted by `ResizeSpec::from_query`), the
//! problem types of `problem.rs`, and the statuses each route answers.

use serde_json::{json, Map, Value};

use crate::connections;
use crate::problem::PROBLEM_TYPES;

/// One query parameter of `POST /v1/resize`: name, JSON schema, description, a valid example.
struct Param {
    name: &'static str,
    schema: fn() -> Value,
    description: &'static str,
    example: &'static str,
}

const RESIZE_PARAMS: &[Param] = &[
    Param {
        name: "width",
        schema: || json!({ "type": "integer", "minimum": 1, "maximum": imaging::MAX_DIMENSION }),
        description: "Target width in pixels. At least one of width and height is required.",
        example: "300",
    },
    Param {
        name: "height",
        schema: || json!({ "type": "integer", "minimum": 1, "maximum": imaging::MAX_DIMENSION }),
        description: "Target height in pixels. At least one of width and height is required.",
        example: "200",
    },
    Param {
        name: "fit",
        schema: || json!({ "type": "string", "enum": ["inside", "cover", "contain", "fill", "outside"], "default": "inside" }),
        description: "How the image fits the box (sharp's meanings).",
        example: "cover",
    },
    Param {
        name: "gravity",
        schema: || {
            json!({ "type": "string", "default": "center", "enum": ["center", "north", "northeast", "east",
                "southeast", "south", "southwest", "west", "northwest", "entropy"] })
        },
        description: "What `cover` keeps and where `contain` places the image; `entropy` (cover only) keeps the busiest window.",
        example: "north",
    },
    Param {
        name: "enlarge",
        schema: || json!({ "type": "boolean", "default": false }),
        description: "Allow upscaling; by default an image is never made larger.",
        example: "true",
    },
    Param {
        name: "format",
        schema: || json!({ "type": "string", "enum": ["jpeg", "png", "webp", "gif", "avif", "auto"], "default": "auto" }),
        description: "Output format; `auto` negotiates from `Accept` and its q-values (at equal q: a type named outright, AVIF first where the deployment allows it in `auto` and `Accept` names `image/avif` outright, then WebP, then the input's format), else follows the input. An animated GIF or WebP (unless `frames=1`) negotiates only among the formats that keep animations: WebP where `Accept` names `image/webp`, else its own format (GIF stays GIF). `gif` writes 256 colours a frame and 1-bit transparency. `avif` is a 400 on a build without the AVIF encoder, and a 413 over the deployment's AVIF pixel bound (`limits.avif_max_output_pixels`; `auto` then picks as without AVIF).",
        example: "webp",
    },
    Param {
        name: "frames",
        schema: || json!({ "type": "string", "enum": ["1", "all"], "default": "all" }),
        description: "`1`: an animated GIF or WebP gives its first frame, as a still. `all` (the default): an animation stays one, frame by frame with its delays and loop count, when the output format holds animations (`webp`, `gif`); `jpeg`, `png` and `avif` get the first frame. An animation's pixels summed over its frames are limited (250 MP of input, 25 MP of output: 413) and every frame's pixels are billed.",
        example: "1",
    },
    Param {
        name: "quality",
        schema: || json!({ "type": "integer", "minimum": 1, "maximum": 100 }),
        description: "JPEG/WebP/AVIF quality (default 80; AVIF with libaom, the usual encoder, defaults to 67 (65 on a libaom older than 3.13), where its files match WebP q80's in SSIM at no more bytes: libaom's scale, sharp's, is not JPEG's).",
        example: "75",
    },
    Param {
        name: "effort",
        schema: || json!({ "type": "integer", "minimum": 0, "maximum": 9, "default": 1 }),
        description: "AVIF encoder effort, sharp's scale: 0 fastest to 9 smallest files (libaom speed 9 - effort; rav1e, where libaom is missing, speed 10 - effort). Only with `format=avif` or `auto`. Over the deployment's cap (`limits.avif_max_effort`, 2 unless set): 400.",
        example: "2",
    },
    Param {
        name: "progressive",
        schema: || json!({ "type": "boolean", "default": false }),
        description: "Progressive JPEG.",
        example: "true",
    },
    Param {
        name: "lossless",
        schema: || json!({ "type": "boolean", "default": false }),
        description: "Lossless WebP.",
        example: "false",
    },
    Param {
        name: "background",
        schema: || json!({ "type": "string", "pattern": "^(#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|white|black|transparent)$" }),
        description: "Padding colour for `contain` and flattening colour for alpha into JPEG: #rgb, #rrggbb, #rrggbbaa, white, black or transparent.",
        example: "#ff8800",
    },
    Param {
        name: "keep_icc",
        schema: || json!({ "type": "boolean", "default": false }),
        description: "Embed the sRGB ICC profile in the output (other metadata is always stripped).",
        example: "true",
    },
];

fn problem_schema() -> Value {
    let types: Vec<String> = PROBLEM_TYPES.iter().map(|t| format!("urn:resizer:problem:{t}")).collect();
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": { "type": "string", "enum": types },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "request_id": { "type": "string" },
            "retry_after_ms": { "type": "integer", "minimum": 1, "description": "With 429 and 503: the precise wait." },
            "quota": { "type": "object", "required": ["dimension", "period_end"],
                "description": "With `quota-exceeded`: the dimension used up, and when the period ends (the retry hint).",
                "properties": {
                    "dimension": { "type": "string", "enum": ["requests", "input_bytes", "output_megapixels", "cpu_seconds"] },
                    "period_end": { "type": "string", "format": "date-time" } } },
        },
    })
}

/// A quota as the admin API reads and writes it (`limits.quota`).
fn quota_schema() -> Value {
    let limit = |what: &str, kind: &str| json!({ "type": [kind, "null"], "minimum": 0, "description": what });
    json!({
        "type": "object", "additionalProperties": false, "required": ["period"],
        "description": "Hard limits per period on billable requests (answered 200); a dimension absent or null is not limited. A request is admitted while every limited dimension is below its limit.",
        "properties": {
            "period": { "type": "string", "enum": ["month", "rolling"],
                "description": "`month`: the calendar month in UTC; `rolling`: consecutive windows of `period_seconds` from the Unix epoch." },
            "period_seconds": { "type": ["integer", "null"], "minimum": 1, "maximum": identity::MAX_ROLLING_SECONDS },
            "requests": limit("Billable requests.", "integer"),
            "input_bytes": limit("Bytes of the billable requests' bodies.", "integer"),
            "output_megapixels": limit("Megapixels of the billable outputs.", "number"),
            "cpu_seconds": limit("CPU seconds of the billable conversions.", "number"),
            "soft_percent": { "type": "integer", "minimum": 1, "maximum": 100, "default": 80,
                "description": "The share of a limit at which the tenant is flagged (`soft_reached`)." },
        },
    })
}

/// Where a tenant stands against its quota (`quota_status` of a tenant, `quota` of a usage
/// answer); null without a quota.
fn quota_status_schema() -> Value {
    let amount = json!({ "type": "number" });
    json!({
        "type": ["object", "null"],
        "required": ["period", "period_start", "period_end", "soft_percent", "soft_reached", "exceeded", "dimensions"],
        "properties": {
            "period": { "type": "string", "enum": ["month", "rolling"] },
            "period_seconds": { "type": ["integer", "null"] },
            "period_start": { "type": "string", "format": "date-time" },
            "period_end": { "type": "string", "format": "date-time" },
            "soft_percent": { "type": "integer" },
            "soft_reached": { "type": "boolean", "description": "Some dimension's usage is at or past its soft threshold." },
            "exceeded": { "type": "boolean", "description": "Some dimension's usage is at its hard limit: resizes are refused (429 `quota-exceeded`) until `period_end`." },
            "dimensions": { "type": "object", "additionalProperties": { "type": "object",
                "required": ["limit", "used", "remaining", "soft_limit"],
                "properties": { "limit": amount, "used": amount, "remaining": amount, "soft_limit": amount } } },
        },
    })
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "X-Request-Id": { "$ref": "#/components/headers/RequestId" } },
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
    })
}

fn retry_problem(description: &str) -> Value {
    let mut p = problem(description);
    p["headers"]["Retry-After"] =
        json!({ "description": "Whole seconds to wait (RFC 9110).", "schema": { "type": "integer", "minimum": 1 } });
    p["headers"]["Retry-After-Ms"] = json!({ "description": "Milliseconds to wait.", "schema": { "type": "integer" } });
    p
}

fn components() -> Value {
    json!({
        "schemas": { "Problem": problem_schema() },
        "headers": {
            "RequestId": { "description": "The request's id: the client's X-Request-Id if it was fit, else a new one.",
                "schema": { "type": "string" } },
        },
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
    })
}

fn json_ok(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } })
}

fn range_params(rollups: bool) -> Vec<Value> {
    let time = |name: &str, description: &str| {
        json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "string" }, "example": "2026-11-25" })
    };
    let mut params = vec![
        time("from", "Start (inclusive): RFC 3339 time or YYYY-MM-DD. Default: 24 hours before `to`."),
        time("to", "End (exclusive): RFC 3339 time or YYYY-MM-DD. Default: now. At most 400 days after `from`."),
    ];
    if rollups {
        params.push(json!({ "name": "granularity", "in": "query", "required": false,
            "schema": { "type": "string", "enum": ["hour", "day"], "default": "hour" } }));
    } else {
        params.push(json!({ "name": "limit", "in": "query", "required": false,
            "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 1000 } }));
        params.push(json!({ "name": "after", "in": "query", "required": false,
            "description": "The `next` of the previous page, unchanged: this page starts after it.",
            "schema": { "type": "string", "pattern": "^([0-9a-f]{2}){13,1024}$" } }));
    }
    params
}

/// One page of a tenant's usage records (`GET /v1/audit`, the admin audit).
fn audit_schema() -> Value {
    json!({ "type": "object", "required": ["tenant", "records", "truncated"],
        "properties": { "tenant": { "type": "integer" }, "truncated": { "type": "boolean", "description": "More records in the range: ask again with `after` = `next`." },
            "next": { "type": "string", "description": "Present when `truncated`: the `after` of the next page." },
            "records": { "type": "array", "items": { "type": "object", "required": ["request_id", "tenant", "time", "status"] } } } })
}

fn usage_schema() -> Value {
    let totals = json!({ "type": "object",
        "required": ["requests", "input_bytes", "output_bytes", "input_megapixels", "output_megapixels", "cpu_ms",
            "source_bytes"],
        "properties": { "requests": { "type": "integer" }, "input_bytes": { "type": "integer" },
            "output_bytes": { "type": "integer" }, "input_megapixels": { "type": "number" },
            "output_megapixels": { "type": "number" }, "cpu_ms": { "type": "number" },
            "source_bytes": { "type": "integer", "minimum": 0,
                "description": "Source bytes transferred from the tenant's origins by signed GETs (0 for POSTs, source-cache hits, revalidations and 304s)." } } });
    let mut billable = totals.clone();
    billable["description"] = json!("What the billing rules bill: the requests answered 200.");
    let mut bucket = totals.clone();
    bucket["properties"]["start"] = json!({ "type": "string", "format": "date-time" });
    bucket["properties"]["billable"] = billable.clone();
    bucket["properties"]["by_status"] = json!({ "type": "object", "additionalProperties": totals });
    let mut total = totals.clone();
    total["description"] =
        json!("Every request, whatever its status; a refused image's pixels are the ones its header declared.");
    json!({ "type": "object", "required": ["tenant", "from", "to", "granularity", "total", "billable", "buckets", "quota"],
        "properties": { "tenant": { "type": "integer" }, "from": { "type": "string" }, "to": { "type": "string" },
            "granularity": { "type": "string", "enum": ["hour", "day"] }, "total": total,
            "billable": billable, "buckets": { "type": "array", "items": bucket },
            "quota": quota_status_schema() } })
}

pub fn public_document() -> Value {
    let operations = operations_paths();
    let parameters: Vec<Value> = RESIZE_PARAMS
        .iter()
        .map(|p| {
            json!({ "name": p.name, "in": "query", "required": false, "description": p.description,
                "schema": (p.schema)(), "example": p.example })
        })
        .collect();
    let image = json!({ "schema": { "type": "string", "format": "binary" } });
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The resized image.",
            "headers": {
                "X-Request-Id": { "$ref": "#/components/headers/RequestId" },
                "X-Image-Width": { "description": "Output width in pixels.", "schema": { "type": "integer" } },
                "X-Image-Height": { "description": "Output height in pixels.", "schema": { "type": "integer" } },
            },
            "content": { "image/jpeg": image, "image/png": image, "image/webp": image, "image/avif": image },
        }),
    );
    let (uri_too_long, headers_too_large) = (uri_too_long(), headers_too_large());
    for (status, description) in [
        ("400", "Bad parameters, or an empty body."),
        ("401", "No API key, an unknown or malformed one (`unknown-key`), or an expired one (`key-expired`)."),
        ("403", "The key was revoked, or its tenant is suspended."),
        ("413", "The body or the image's declared pixel count is over the tenant's limit, or the output would be over 50 megapixels."),
        ("408", "The body had not arrived by the request's deadline (`api.request_timeout_ms` from its arrival)."),
        ("414", uri_too_long.as_str()),
        ("415", "The body is not a JPEG, PNG, WebP or GIF, nor (with libheif) an AVIF or HEIC."),
        ("422", "The image is corrupt or cannot be decoded, or (cluster) it failed every attempt: `poison-job`."),
        ("431", headers_too_large.as_str()),
        ("504", "The deadline passed before the image was ready."),
        ("500", "A failure of the server (never caused by the input alone)."),
    ] {
        responses.insert(status.into(), problem(description));
    }
    responses.insert("429".into(), retry_problem("The tenant's rate limit was reached (`rate-limited`), its quota for the period is used up (`quota-exceeded`: Retry-After is the period's end), or it has its cap of requests in flight on the node (`too-many-in-flight`, before the body is read)."));
    responses.insert("503".into(), retry_problem("Overloaded or shutting down: the queue is over its budget, or the node holds its budget of request-body bytes in flight (`overloaded`, before the body is read when it declares its length), or (cluster) the job queue cannot be reached (`queue-unavailable`)."));

    json!({
        "openapi": "3.1.0",
        "info": { "title": "resizer public API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Send an image, get it back resized. Errors are application/problem+json (RFC 9457)." },
        "paths": {
            "/v1/resize": { "post": {
                "operationId": "resize",
                "summary": "Resize an image",
                "security": [{ "bearer": [] }],
                "parameters": parameters,
                "requestBody": { "required": true, "description": "The image bytes (JPEG, PNG, WebP, GIF, or AVIF and HEIC where the node has libheif).",
                    "content": { "application/octet-stream": image, "image/jpeg": image, "image/png": image,
                        "image/webp": image, "image/gif": image, "image/avif": image, "image/heic": image } },
                "responses": responses,
            } },
            "/v1/audit": { "get": {
                "operationId": "audit",
                "summary": "The caller's own usage records (its recent requests), from the archive",
                "security": [{ "bearer": [] }],
                "parameters": range_params(false),
                "responses": {
                    "200": { "description": "The records, oldest first.",
                        "headers": { "X-Request-Id": { "$ref": "#/components/headers/RequestId" } },
                        "content": { "application/json": { "schema": audit_schema() } } },
                    "400": problem("Bad range, limit or cursor, or an unknown parameter."),
                    "401": problem("No API key, an unknown or malformed one, or an expired one (`key-expired`)."),
                    "403": problem("The key was revoked, or its tenant is suspended."),
                    "414": problem(&uri_too_long),
                    "429": retry_problem("More than 10 reads of the tenant's own records per second."),
                    "431": problem(&headers_too_large),
                    "503": problem("Metering is off on this node."),
                    "500": problem("A failure of the server."),
                },
            } },
            "/v1/limits": { "get": {
                "operationId": "limits",
                "summary": "The caller's effective limits, its quota now, and its rate limit's state on this node",
                "security": [{ "bearer": [] }],
                "responses": {
                    "200": { "description": "Limits, rate limit and quota.",
                        "headers": { "X-Request-Id": { "$ref": "#/components/headers/RequestId" } },
                        "content": { "application/json": { "schema": { "type": "object",
                            "required": ["tenant", "limits", "rate_limit", "quota"],
                            "properties": {
                                "tenant": { "type": "integer" },
                                "limits": { "type": "object",
                                    "required": ["rate_per_sec", "burst", "max_input_bytes", "max_input_pixels", "cache_max_age_secs", "sources"],
                                    "properties": { "sources": { "type": "array", "items": { "type": "string" } } } },
                                "rate_limit": { "type": "object", "required": ["api_nodes", "node_rate_per_sec", "node_burst", "node_available"],
                                    "description": "Each api node holds an equal share of the rate and burst; `node_available` is how many requests this node would take at once now.",
                                    "properties": { "node_available": { "type": "integer", "minimum": 0 } } },
                                "quota": { "description": "The quota now (limit, used, remaining per dimension), or null without one." } } } } } },
                    "401": problem("No API key, an unknown or malformed one, or an expired one (`key-expired`)."),
                    "403": problem("The key was revoked, or its tenant is suspended."),
                    "414": problem(&uri_too_long),
                    "429": retry_problem("More than 10 reads of the tenant's own records per second."),
                    "431": problem(&headers_too_large),
                    "500": problem("A failure of the server."),
                },
            } },
            "/v1/usage": { "get": {
                "operationId": "usage",
                "summary": "The caller's own usage, from the hourly rollups",
                "security": [{ "bearer": [] }],
                "parameters": range_params(true),
                "responses": {
                    "200": { "description": "Usage by time bucket and status.",
                        "headers": { "X-Request-Id": { "$ref": "#/components/headers/RequestId" } },
                        "content": { "application/json": { "schema": usage_schema() } } },
                    "400": problem("Bad range or granularity, or an unknown parameter."),
                    "401": problem("No API key, an unknown or malformed one, or an expired one (`key-expired`)."),
                    "403": problem("The key was revoked, or its tenant is suspended."),
                    "414": problem(&uri_too_long),
                    "429": retry_problem("More than 10 usage reads per second."),
                    "431": problem(&headers_too_large),
                    "503": problem("Metering is off on this node."),
                    "500": problem("A failure of the server."),
                },
            } },
            "/v1/img/{key}/{signature}/{options}/{source}": { "get": signed_get() },
            "/healthz": operations["/healthz"], "/readyz": operations["/readyz"], "/metrics": operations["/metrics"],
            "/openapi.json": { "get": { "operationId": "openapi", "summary": "This document",
                "responses": { "200": json_ok("OpenAPI 3.1.") } } },
        },
        "components": components(),
    })
}

/// `GET /v1/img/…`: an image by a signed URL (docs/urls.md).
fn signed_get() -> Value {
    let segment = |name: &str, description: &str| {
        json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "pattern": "^[^/]+$" } })
    };
    let image = json!({ "schema": { "type": "string", "format": "binary" } });
    let caching = json!({
        "X-Request-Id": { "$ref": "#/components/headers/RequestId" },
        "ETag": { "description": "Strong: the source's validator, the options, the pipeline version and what `Accept` decided.", "schema": { "type": "string" } },
        "Cache-Control": { "description": "`public, max-age=N`: the tenant's `cache_max_age_secs`.", "schema": { "type": "string" } },
    });
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({ "description": "The resized image.", "headers": caching.clone(),
        "content": { "image/jpeg": image, "image/png": image, "image/webp": image, "image/avif": image } }),
    );
    responses.insert("304".into(), json!({ "description": "`If-None-Match` named the current ETag: no fetch or conversion was made.", "headers": caching }));
    let (uri_too_long, headers_too_large) = (uri_too_long(), headers_too_large());
    for (status, description) in [
        ("400", "Not a signed URL's shape (`bad-url`), bad options, or a source that is not an http(s) URL or an s3:// key of a registered bucket (`bad-source-url`)."),
        ("401", "The signing key has expired (`key-expired`)."),
        ("403", "The signature does not match (`bad-signature`, checked before anything else), the URL's `exp` has passed (`url-expired`), the key was revoked or its tenant suspended, or the source is not among the tenant's (`source-not-allowed`) or resolves to a private address (`source-address-forbidden`)."),
        ("404", "Signed URLs are off on this deployment (`url-signing-off`), or the origin answered 404 or 410, or the bucket has no such key (`source-not-found`)."),
        ("413", "The source or its declared pixel count is over the tenant's limit."),
        ("414", uri_too_long.as_str()),
        ("415", "The source is not a JPEG, PNG, WebP or GIF, nor (with libheif) an AVIF or HEIC."),
        ("422", "The source is corrupt or cannot be decoded."),
        ("431", headers_too_large.as_str()),
        ("500", "A failure of the server."),
        ("502", "The origin failed (`origin-error`), could not be reached (`origin-unreachable`) or redirected too often (`too-many-redirects`)."),
        ("504", "The origin (`origin-timeout`) or the conversion (`deadline-exceeded`) was too slow."),
    ] {
        responses.insert(status.into(), problem(description));
    }
    responses.insert(
        "429".into(),
        retry_problem("The tenant's rate limit, quota or cap of requests in flight, as for a POST."),
    );
    responses.insert(
        "503".into(),
        retry_problem("Overloaded, shutting down, or (cluster) the job queue cannot be reached."),
    );
    json!({
        "operationId": "imageBySignedUrl",
        "summary": "An image by a signed URL, for <img src>, browsers and CDNs",
        "description": "The signature is base64url (no padding) of HMAC-SHA256 under the signing key's secret over `<key>/<options>/<source>` as they appear in the URL. No Authorization header: the signature is the credential.",
        "parameters": [
            segment("key", "A signing key's id; it names the tenant."),
            segment("signature", "base64url of HMAC-SHA256 over `<key>/<options>/<source>`."),
            segment("options", "The parameters of POST /v1/resize with `,` for `&` (`width=300,format=auto`), and `exp=<Unix seconds>` for a URL that expires."),
            segment("source", "The source image's URL (`https://…`, `http://…` or `s3://<registered bucket>/<key>`) in base64url without padding; a `.ext` after it is ignored."),
            { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } },
        ],
        "responses": responses,
    })
}

/// Health, readiness and metrics: on both ports, without a token.
fn operations_paths() -> Value {
    json!({
        "/healthz": { "get": { "operationId": "healthz", "summary": "The process is alive (no token)",
            "responses": { "200": json_ok("Alive.") } } },
        "/readyz": { "get": { "operationId": "readyz", "summary": "Ready to serve (no token)",
            "responses": { "200": json_ok("Ready."), "503": problem("Not ready: starting, shutting down, no NATS connection, or a usage spool that cannot write.") } } },
        "/metrics": { "get": { "operationId": "metrics", "summary": "Prometheus metrics (no token)",
            "responses": { "200": { "description": "Text exposition format.",
                "content": { "text/plain": { "schema": { "type": "string" } } } } } } },
    })
}

fn uri_too_long() -> String {
    format!("The request target (path and query) is over {} bytes: `uri-too-long`.", connections::MAX_URI_BYTES)
}

fn headers_too_large() -> String {
    format!(
        "More than {} header fields, or more than {} bytes of them: `headers-too-large`.",
        connections::MAX_HEADER_FIELDS,
        connections::MAX_HEADER_BYTES
    )
}

pub fn admin_document() -> Value {
    let operations = operations_paths();
    let limits = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "rate_per_sec": { "type": ["number", "null"], "exclusiveMinimum": 0 },
            "burst": { "type": ["integer", "null"], "minimum": 1, "maximum": 4_294_967_295u64 },
            "max_input_bytes": { "type": ["integer", "null"], "minimum": 1, "maximum": identity::MAX_INPUT_BYTES_CEILING },
            "max_input_pixels": { "type": ["integer", "null"], "minimum": 1, "maximum": identity::MAX_INPUT_PIXELS_CEILING },
            "quota": { "oneOf": [quota_schema(), { "type": "null" }],
                "description": "The tenant's quota; null: the deployment's default (`limits.quota`); a quota without limits: none." },
            "sources": { "type": ["array", "null"], "maxItems": identity::MAX_SOURCE_ENTRIES,
                "items": { "type": "string", "minLength": 1, "maxLength": 255 },
                "description": "Where signed URLs may fetch sources from (docs/urls.md): hosts (https), `*.` subdomains, or URL prefixes (`http://` ones allow plain HTTP); null or empty: nowhere." },
            "cache_max_age_secs": { "type": ["integer", "null"], "minimum": 0, "maximum": identity::MAX_CACHE_MAX_AGE_SECS,
                "description": "`Cache-Control: max-age` of signed-URL answers; null: the deployment's default." },
        },
    });
    let effective = json!({
        "type": "object",
        "required": ["rate_per_sec", "burst", "max_input_bytes", "max_input_pixels"],
        "properties": {
            "rate_per_sec": { "type": "number" }, "burst": { "type": "integer" },
            "max_input_bytes": { "type": "integer" }, "max_input_pixels": { "type": "integer" },
            "quota": { "oneOf": [quota_schema(), { "type": "null" }], "description": "The quota held to; null: none." },
            "cache_max_age_secs": { "type": "integer" },
        },
    });
    let tenant = json!({
        "type": "object",
        "required": ["id", "name", "status", "limits", "effective_limits", "quota_status", "created_at"],
        "properties": {
            "id": { "type": "integer" }, "name": { "type": "string" },
            "status": { "type": "string", "enum": ["active", "suspended"] },
            "limits": limits, "effective_limits": effective, "quota_status": quota_status_schema(),
            "created_at": { "type": "string", "format": "date-time" },
        },
    });
    let key = json!({
        "type": "object",
        "required": ["id", "tenant_id", "label", "created_at", "revoked_at", "expires_at"],
        "properties": {
            "id": { "type": "string" }, "tenant_id": { "type": "integer" }, "label": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" },
            "created_at": { "type": "string", "format": "date-time" },
            "revoked_at": { "type": ["string", "null"], "format": "date-time" },
            "expires_at": { "type": ["string", "null"], "format": "date-time",
                "description": "From this instant on the key is refused with 401 `key-expired`; null: it never expires." },
            "key": { "type": "string", "description": "Only in the answer to creating or rotating an API key: the full key, shown once." },
            "purpose": { "type": "string", "enum": ["api", "signing"],
                "description": "`api`: authenticates requests; `signing`: signs GET URLs (docs/urls.md) and authenticates nothing." },
            "signing_secret": { "type": "string", "pattern": "^[0-9a-f]{64}$",
                "description": "Only in the answer to creating or rotating a signing key: its secret, shown once." },
        },
    });
    let expires_at = json!({ "type": "string", "format": "date-time",
        "description": "When the key stops working (RFC 3339, in the future). Not with `expires_in_s`." });
    let expires_in = json!({ "type": "integer", "minimum": 1, "maximum": identity::MAX_KEY_LIFETIME.as_secs(),
        "description": "Seconds from now until the key stops working. Not with `expires_at`." });
    let admin_record = json!({ "type": "object",
        "required": ["id", "time", "operator", "request_id", "action", "tenant_id", "key_id", "outcome", "detail"],
        "properties": {
            "id": { "type": "integer" }, "time": { "type": "string", "format": "date-time" },
            "operator": { "type": "string" }, "request_id": { "type": "string" },
            "action": { "type": "string", "enum": ["create-tenant", "update-limits", "set-status", "create-key", "revoke-key", "rotate-key"] },
            "tenant_id": { "type": ["integer", "null"] }, "key_id": { "type": ["string", "null"] },
            "outcome": { "type": "string", "description": "`ok`, or what refused it: not-found, conflict, invalid, key-revoked, key-expired." },
            "detail": { "type": "string", "description": "What was asked; never a secret." } } });
    let admin_log_page = json!({ "type": "object", "required": ["records", "truncated"], "properties": {
        "truncated": { "type": "boolean" },
        "next": { "type": "string", "description": "Present when `truncated`: the `before` of the next page." },
        "records": { "type": "array", "items": admin_record } } });
    let readiness = json!({ "type": "object", "required": ["status", "version"], "properties": {
        "status": { "type": "string", "enum": ["ready", "not ready"] },
        "reason": { "type": "string", "description": "Why it takes no requests, when not ready." },
        "version": { "type": "string" },
        "jpeg_simd": { "type": "boolean" },
        "jobs": { "type": "object", "properties": { "stream_leader": { "type": ["boolean", "null"],
            "description": "Whether the job stream had a leader when last asked; null before the first answer." } } },
        "identity": { "type": "object", "description": "A cluster api node's credential replication.", "properties": {
            "replication": { "type": "string" }, "version": { "type": "integer" }, "lag_ms": { "type": "integer" },
            "since_contact_ms": { "type": ["integer", "null"] } } } } });
    let node_board = json!({ "type": "object", "required": ["this_node", "cluster", "api_nodes"], "properties": {
        "this_node": readiness.clone(),
        "cluster": { "type": "boolean", "description": "False where there is no cluster (`resizer dev`): `api_nodes` is then empty." },
        "api_nodes": { "type": "array", "items": { "type": "object",
            "required": ["node", "in_rotation", "since_heard_ms", "silent", "status"], "properties": {
                "node": { "type": "string", "description": "The node's id and its process's random suffix." },
                "in_rotation": { "type": "boolean" },
                "since_heard_ms": { "type": "integer" },
                "silent": { "type": "boolean", "description": "Not heard for 3 s or more (three announcements missed)." },
                "status": { "oneOf": [readiness, { "type": "null" }], "description": "What it last said of itself; null from an older version." } } } } } });
    let list = |field: &str, item: &Value| json!({ "type": "object", "required": [field], "properties": { field: { "type": "array", "items": item } } });
    let body = |schema: Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let ok = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let errors = |extra: &[(&str, &str)]| {
        let mut m = Map::new();
        m.insert("401".into(), problem("Missing or wrong admin token (checked before the body is read)."));
        m.insert("403".into(), problem("A write with a read-only operator token (`admin-forbidden`)."));
        m.insert(
            "429".into(),
            problem(
                "Too many wrong admin tokens from this address (`admin-throttled`): not checked until `Retry-After`.",
            ),
        );
        m.insert("413".into(), problem("The request body is over 64 KiB."));
        m.insert("414".into(), problem(&uri_too_long()));
        m.insert("431".into(), problem(&headers_too_large()));
        for (status, description) in extra {
            m.insert((*status).into(), problem(description));
        }
        m
    };
    let with = |mut base: Map<String, Value>, status: &str, response: Value| {
        base.insert(status.into(), response);
        Value::Object(base)
    };
    let tenant_param = json!([{ "name": "tenant", "in": "path", "required": true,
        "description": "The tenant's numeric id or its name.", "schema": { "type": "string" } }]);
    json!({
        "openapi": "3.1.0",
        "info": { "title": "resizer admin API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/tenants": {
                "get": { "operationId": "listTenants", "responses": with(errors(&[]), "200", ok("All tenants.", list("tenants", &tenant))) },
                "post": { "operationId": "createTenant",
                    "requestBody": body(json!({ "type": "object", "required": ["name"], "additionalProperties": false,
                        "properties": { "name": { "type": "string", "pattern": "^(?![0-9]+$)(?![.]{1,2}$)[A-Za-z0-9._-]{1,64}$" }, "limits": limits } })),
                    "responses": with(errors(&[("400", "Invalid name or limits."), ("409", "The name is taken.")]), "201", ok("The new tenant.", tenant.clone())) },
            },
            "/v1/tenants/{tenant}": {
                "parameters": tenant_param,
                "get": { "operationId": "getTenant", "responses": with(errors(&[("404", "No such tenant.")]), "200", ok("The tenant.", tenant.clone())) },
                "patch": { "operationId": "updateTenant",
                    "requestBody": body(json!({ "type": "object", "additionalProperties": false, "properties": {
                        "limits": limits, "status": { "type": "string", "enum": ["active", "suspended"] } } })),
                    "responses": with(errors(&[("400", "Invalid limits or status."), ("404", "No such tenant.")]), "200", ok("The tenant after the change.", tenant)) },
            },
            "/v1/tenants/{tenant}/keys": {
                "parameters": tenant_param,
                "get": { "operationId": "listKeys", "responses": with(errors(&[("404", "No such tenant.")]), "200", ok("The tenant's keys (never their secrets).", list("keys", &key))) },
                "post": { "operationId": "createKey",
                    "requestBody": body(json!({ "type": "object", "additionalProperties": false, "properties": {
                        "label": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" },
                        "expires_at": expires_at.clone(), "expires_in_s": expires_in.clone(),
                        "purpose": { "type": "string", "enum": ["api", "signing"], "default": "api" } } })),
                    "responses": with(errors(&[("400", "Invalid label, expiry (malformed, in the past, both given) or purpose."), ("404", "No such tenant, or (`url-signing-off`) a signing key where signed URLs are off.")]), "201", ok("The new key; `key` holds an API key's full key, `signing_secret` a signing key's secret, shown only this once.", key.clone())) },
            },
            "/v1/tenants/{tenant}/usage": {
                "parameters": tenant_param,
                "get": { "operationId": "tenantUsage", "parameters": range_params(true),
                    "responses": with(errors(&[("400", "Bad range or granularity."), ("404", "No such tenant."), ("503", "Metering is off.")]), "200", ok("Usage by time bucket and status.", usage_schema())) },
            },
            "/v1/tenants/{tenant}/audit": {
                "parameters": tenant_param,
                "get": { "operationId": "tenantAudit", "parameters": range_params(false),
                    "responses": with(errors(&[("400", "Bad range, limit or cursor."), ("404", "No such tenant."), ("503", "Metering is off.")]), "200",
                        ok("The tenant's usage records, oldest first.", audit_schema())) },
            },
            "/v1/keys/{key}/revoke": {
                "post": { "operationId": "revokeKey",
                    "parameters": [{ "name": "key", "in": "path", "required": true, "description": "The key id (12 characters after `rsz_`).", "schema": { "type": "string" } }],
                    "responses": with(errors(&[("404", "No such key.")]), "200", ok("The revoked key.", key.clone())) },
            },
            "/v1/keys/{key}/rotate": {
                "post": { "operationId": "rotateKey",
                    "description": "In one transaction: a new key for the same tenant and label, and the old key set to expire after the grace (never later than it already would). A revoked or expired key cannot be rotated (409).",
                    "parameters": [{ "name": "key", "in": "path", "required": true, "description": "The old key's id.", "schema": { "type": "string" } }],
                    "requestBody": body(json!({ "type": "object", "additionalProperties": false,
                        "description": "Exactly one of `old_key_valid_for_s` and `old_key_expires_at`; the new key's own expiry is optional.",
                        "properties": {
                            "old_key_valid_for_s": { "type": "integer", "minimum": 0, "maximum": identity::MAX_KEY_LIFETIME.as_secs(),
                                "description": "How long the old key keeps working, in seconds (0: it stops now)." },
                            "old_key_expires_at": { "type": "string", "format": "date-time", "description": "When the old key stops working (not in the past)." },
                            "expires_at": expires_at, "expires_in_s": expires_in } })),
                    "responses": with(errors(&[("400", "Bad grace or expiry."), ("404", "No such key, or (`url-signing-off`) a signing key where signed URLs are off."), ("409", "The key is revoked or expired.")]), "201",
                        ok("The new key (`key` holds the full key, shown only this once), with the old one in `old_key`.", key)) },
            },
            "/v1/admin/audit": {
                "get": { "operationId": "adminLog",
                    "description": "Who made which admin write, newest first: every write that reached the identity store, committed (`outcome` = `ok`) or refused by it. Requests refused for their token or body are not writes and are not listed. Read access is enough.",
                    "parameters": [
                        { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                        { "name": "before", "in": "query", "required": false, "description": "The `next` of the previous page, unchanged.", "schema": { "type": "string", "pattern": "^[0-9]+$" } },
                    ],
                    "responses": with(errors(&[("400", "Bad limit or cursor, or an unknown parameter."), ("503", "Not on an api node: the identity service holds the log.")]), "200",
                        ok("A page of the admin log.", admin_log_page)) },
            },
            "/v1/admin/nodes": {
                "get": { "operationId": "adminNodes",
                    "description": "The health of the nodes: what this process says of itself (its `/readyz`, answered 200 even when not ready), and every api node whose presence announcements reach it (an api node's own, the identity service's through NATS), with what each last said and how long ago. A node silent for 3 s or more was killed, frozen or cut off; one silent for 10 minutes is dropped. Read access is enough.",
                    "responses": with(errors(&[]), "200", ok("This node and the api nodes heard lately, by name.", node_board)) },
            },
            "/healthz": operations["/healthz"], "/readyz": operations["/readyz"], "/metrics": operations["/metrics"],
        },
        "components": components(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_parameter_is_accepted_by_the_parser() {
        for p in RESIZE_PARAMS {
            let mut pairs = vec![(p.name, p.example)];
            if p.name == "gravity" || p.name == "background" {
                pairs.push(("fit", "cover"));
            }
            if p.name != "width" {
                pairs.push(("width", "10"));
            }
            // As a client sends them: percent-encoded into the query (`#ff8800` is `%23ff8800`).
            let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
            imaging::ResizeSpec::from_query(&query)
                .unwrap_or_else(|e| panic!("documented parameter {} refused: {e}", p.name));
        }
    }

    #[test]
    fn documents_are_openapi_3_1() {
        for doc in [public_document(), admin_document()] {
            assert_eq!(doc["openapi"], "3.1.0");
            assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
        }
        let admin = admin_document();
        assert!(admin["paths"]["/v1/keys/{key}/rotate"]["post"]["responses"]["409"].is_object());
        assert!(admin["paths"]["/v1/admin/audit"]["get"]["responses"]["200"].is_object());
        let types = &admin["components"]["schemas"]["Problem"]["properties"]["type"]["enum"];
        assert!(types.as_array().is_some_and(|t| t.contains(&json!("urn:resizer:problem:key-expired"))));
        let resize = &public_document()["paths"]["/v1/resize"]["post"]["responses"];
        for status in ["200", "400", "401", "403", "408", "413", "415", "422", "429", "503", "504"] {
            assert!(resize.get(status).is_some(), "status {status} undocumented");
        }
    }
}
