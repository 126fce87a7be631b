//! The JSON Schema of job submissions: the document served at `GET /api-docs/schema/submit`,
//! and the shape check run on every `POST /jobs` body before the builder
//! ([`super::submit::build`]) applies the semantic rules.
//!
//! It starts from the reference's schema (`../shared/spec/fts-rest-api.md` §3.1) and widens it
//! to what real clients send (`../shared/spec/clients.md` §3, §6, §8): `verify_checksum` as a
//! boolean or a letter/word, integers as numeric strings (`"nostreams": "4"`), metadata as an
//! object or a string, flags as booleans, `"Y"`/`"N"` or 0/1, explicit nulls everywhere and
//! unknown keys. Fields whose refusal text the reference tests (`scitag`, integer fields given
//! garbage, `delete`) are left loose enough for the builder to give that text.
//!
//! Error texts follow the reference's classes, and name the offending field by its JSON
//! pointer:
//! - a value of the wrong JSON type → `Malformed request: /params/verify_checksum: 1234 is not
//!   of types "null", "boolean", "string"` (a `TypeError` in the reference);
//! - a missing required key → `Missing parameter: 'sources'` (a `KeyError`);
//! - anything else (pattern, minimum, length) → `Invalid value within the request: /params/timeout:
//!   "this-is-a-string" does not match …` (a `ValueError`).

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::submit::{MAX_ECHO_LEN, msg};

/// Python's `int()` syntax for strings: optional sign, digits with single underscores between
/// them, surrounding whitespace.
const INT_STRING_PATTERN: &str = r"^\s*[+-]?[0-9]+(_[0-9]+)*\s*$";

/// A decimal number as a string (`"1024"`, `"1024.0"`, `"1e3"`).
const NUMBER_STRING_PATTERN: &str = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$";

/// The submission schema (draft 7, which every JSON Schema tool understands).
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

/// Check the shape of a submission body; the error is the full message for a 400 answer.
pub fn validate(body: &Value) -> Result<(), String> {
    match validator().validate(body) {
        Ok(()) => Ok(()),
        Err(error) => Err(describe(&error)),
    }
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // Cannot fail: the schema is a constant draft-7 document without remote references;
        // the unit test `schema_compiles_and_is_served_as_draft_7` compiles it.
        jsonschema::draft7::new(schema()).expect("the constant submit schema compiles")
    })
}

fn describe(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind;
    if let ValidationErrorKind::Required { property } = error.kind() {
        return msg::missing_parameter(property.as_str().unwrap_or_default());
    }
    let path = error.instance_path().to_string();
    let text = clip(&error.to_string());
    let detail = if path.is_empty() {
        text
    } else {
        format!("{path}: {text}")
    };
    match error.kind() {
        ValidationErrorKind::Type { .. } => msg::malformed(&detail),
        _ => msg::invalid_value(&detail),
    }
}

/// Validation messages quote the offending value; keep an answer small however big it was.
fn clip(text: &str) -> String {
    let limit = 2 * MAX_ECHO_LEN;
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// An integer, a string in `int()` syntax, or null.
fn integer(title: &str) -> Value {
    json!({"title": title, "type": ["integer", "string", "null"], "pattern": INT_STRING_PATTERN})
}

/// A yes/no flag: a boolean, a `"Y"`/`"N"`-style string, 0/1, or null.
fn flag(title: &str) -> Value {
    json!({"title": title, "type": ["boolean", "string", "integer", "null"]})
}

fn string(title: &str) -> Value {
    json!({"title": title, "type": ["string", "null"]})
}

/// Metadata: an object, or a string stored as `{"label": ...}`.
fn metadata(title: &str) -> Value {
    json!({"title": title, "type": ["object", "string", "null"]})
}

fn build_schema() -> Value {
    let url = json!({"title": "URL", "type": "string"});
    let file = json!({
        "title": "Transfer",
        "type": "object",
        "required": ["sources", "destinations"],
        "properties": {
            "sources": {"type": "array", "items": url, "minItems": 1},
            "destinations": {"type": "array", "items": url, "minItems": 1},
            "priority": integer("Job priority (ignored: the job's priority applies)"),
            "metadata": metadata("File metadata"),
            "filesize": {
                "title": "File size in bytes",
                "type": ["number", "string", "null"],
                "minimum": 0,
                "pattern": NUMBER_STRING_PATTERN
            },
            "checksum": string("User defined checksum in the form algorithm:value"),
            "activity": string("Activity share"),
            "selection_strategy": string(
                "Replica selection: orderly, auto, queue, success, throughput, file-throughput, pending-data, waiting-time, waiting-time-with-error or duration"
            ),
            "scitag": {
                "title": "SciTag flow label",
                "description": "An integer in [65, 65535], or null"
            },
            "staging_metadata": {"title": "Staging metadata", "type": ["object", "string", "null"],
                "description": "Must be an object; a string is refused"},
            "archive_metadata": {"title": "Archive metadata", "type": ["object", "string", "null"],
                "description": "Must be an object; a string is refused"},
            "source_tokens": {"title": "Source access tokens", "type": ["array", "null"]},
            "destination_tokens": {"title": "Destination access tokens", "type": ["array", "null"]}
        }
    });
    let params = json!({
        "title": "Job parameters",
        "type": ["object", "null"],
        "properties": {
            "verify_checksum": {
                "title": "Checksum verification: true (both), false, or both/source/target/none (first letter counts)",
                "type": ["boolean", "string", "null"],
                "minLength": 1
            },
            "reuse": flag("If set to true, srm sessions will be reused"),
            "destination_spacetoken": string("Destination space token"),
            "spacetoken": string("Destination space token (name before 3.13)"),
            "source_spacetoken": string("Source space token"),
            "bring_online": integer("Bring online operation timeout"),
            "copy_pin_lifetime": integer("Minimum lifetime when bring online is used. -1 means no bring online"),
            "archive_timeout": integer("Archive operation timeout"),
            "job_metadata": metadata("Job metadata"),
            "overwrite": flag("Overwrite the destination"),
            "overwrite_on_retry": flag("Overwrite the destination on retries only"),
            "overwrite_when_only_on_disk": flag("Overwrite when the destination is only on disk (needs archive_timeout)"),
            "overwrite_hop": flag("Overwrite intermediate hops (multihop jobs)"),
            "dst_file_report": flag("Report on the destination file (tape)"),
            "gridftp": string("Reserved for future usage"),
            "retry": integer("Number of retries (-1: none, 0: server default)"),
            "retry_delay": integer("Seconds between retries"),
            "multihop": flag("Transfers are the hops of one multihop transfer"),
            "timeout": integer("Timeout in seconds"),
            "nostreams": integer("Number of streams"),
            "buffer_size": integer("Buffer size"),
            "strict_copy": flag("Disable all checks, just copy the file"),
            "disable_cleanup": flag("Enable/disable the copy clean-up happening when a transfer fails"),
            "priority": integer("Job priority (1 to 5)"),
            "ipv4": flag("Force IPv4 if the underlying protocol supports it"),
            "ipv6": flag("Force IPv6 if the underlying protocol supports it"),
            "s3alternate": flag("Use S3 alternate (path-style) URLs"),
            "max_time_in_queue": {
                "title": "Time in queue before the job expires: hours, or a string with an s/m/h/d suffix",
                "type": ["integer", "string", "null"]
            },
            "id_generator": string("Job id generation: standard or deterministic"),
            "sid": string("Seed of deterministic job ids"),
            "target_qos": string("Target QoS class")
        }
    });
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Job submission",
        "type": "object",
        "properties": {
            "params": params,
            "files": {"type": ["array", "null"], "items": file},
            "delete": {
                "title": "Deletion jobs",
                "description": "No longer supported: any non-null value is refused with 405"
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::submit::tests::client_bodies;

    fn error(body: Value) -> String {
        validate(&body).expect_err("the schema refuses it")
    }

    fn file() -> Value {
        json!({"sources": ["root://source.es/file"], "destinations": ["root://dest.ch/file"]})
    }

    #[test]
    fn schema_compiles_and_is_served_as_draft_7() {
        let _ = validator();
        let doc = schema();
        assert_eq!(doc["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(doc["title"], "Job submission");
        assert_eq!(
            doc["properties"]["files"]["items"]["required"],
            json!(["sources", "destinations"])
        );
        assert!(doc["properties"]["params"]["properties"]["verify_checksum"].is_object());
        // The served document is a valid draft-7 schema.
        assert!(jsonschema::draft7::meta::is_valid(doc));
    }

    #[test]
    fn captured_client_bodies_are_valid() {
        for (name, body) in client_bodies() {
            assert_eq!(validate(&body), Ok(()), "{name}");
        }
    }

    #[test]
    fn loose_types_real_clients_send_are_valid() {
        for params in [
            json!({"verify_checksum": true}),
            json!({"verify_checksum": false}),
            json!({"verify_checksum": "both"}),
            json!({"verify_checksum": "b"}),
            json!({"nostreams": "4", "timeout": "60", "retry": -1, "priority": "2", "buffer_size": 1048576}),
            json!({"job_metadata": "None"}),
            json!({"job_metadata": {"issuer": "rucio", "multi_sources": true}}),
            json!({"overwrite": "Y", "reuse": "N", "multihop": 0, "strict_copy": 1}),
            json!({"max_time_in_queue": 8}),
            json!({"max_time_in_queue": "4s"}),
            json!({"account": "jdoe", "fail_nearline": true, "credential": "dropbox", "unmanaged_tokens": false}),
            json!({"id_generator": "deterministic", "sid": "abc"}),
            json!({"spacetoken": "T", "destination_spacetoken": null, "source_spacetoken": null}),
        ] {
            let body = json!({"files": [file()], "params": params});
            assert_eq!(validate(&body), Ok(()), "{params}");
        }
        let mut f = file();
        f["filesize"] = json!(1024.0);
        f["metadata"] = json!("a label");
        f["scitag"] = json!(65);
        assert_eq!(
            validate(&json!({"files": [f], "params": null, "staging": {}})),
            Ok(())
        );
    }

    #[test]
    fn what_the_builder_reports_itself_passes_the_schema() {
        // The builder owns these texts (reference tests match them).
        for body in [
            json!({"parameters": {}}),
            json!({"files": null}),
            json!({"files": []}),
            json!({"delete": []}),
            json!({"delete": ["mock://a/f"], "params": {"job_metadata": "None"}}),
            json!({"files": [{"sources": ["/etc/passwd"], "destinations": ["file:///srv/pub"]}]}),
            json!({"files": [{"sources": ["root://a/f"], "destinations": ["root://b/f"], "scitag": "65"}]}),
            json!({"files": [{"sources": ["root://a/f"], "destinations": ["root://b/f"], "scitag": 0}]}),
            json!({"files": [{"sources": ["root://a/f"], "destinations": ["root://b/f"], "staging_metadata": "text"}]}),
            json!({"files": [file()], "params": {"id_generator": "deterministic"}}),
        ] {
            assert_eq!(validate(&body), Ok(()), "{body}");
        }
    }

    #[test]
    fn numeric_verify_checksum_is_refused_naming_the_field() {
        let message = error(json!({"files": [file()], "params": {"verify_checksum": 1234}}));
        assert!(message.starts_with("Malformed request: "), "{message}");
        assert!(message.contains("verify_checksum"), "{message}");
        assert_eq!(
            message,
            "Malformed request: /params/verify_checksum: 1234 is not of types \"null\", \"boolean\", \"string\""
        );
    }

    #[test]
    fn wrong_shapes() {
        let message = error(json!({"files": 48}));
        assert!(message.starts_with("Malformed request"), "{message}");
        assert!(message.contains("/files"), "{message}");
        assert!(error(json!([1])).starts_with("Malformed request: "));
        assert_eq!(
            error(json!({"files": [{"destinations": ["root://dest.ch/file"]}]})),
            "Missing parameter: 'sources'"
        );
        let message = error(json!({"files": [{"sources": [], "destinations": ["root://d/f"]}]}));
        assert!(
            message.starts_with("Invalid value within the request: /files/0/sources: "),
            "{message}"
        );
        let message = error(json!({"files": [file()], "params": {"sid": 42}}));
        assert!(
            message.starts_with("Malformed request: /params/sid: "),
            "{message}"
        );
        let message = error(json!({"files": [file()], "params": {"job_metadata": [1]}}));
        assert!(message.contains("/params/job_metadata"), "{message}");
    }

    #[test]
    fn garbage_integers_are_invalid_values() {
        let message = error(json!({"files": [file()], "params": {"timeout": "this-is-a-string"}}));
        assert!(
            message.starts_with("Invalid value within the request: /params/timeout: "),
            "{message}"
        );
        assert!(
            error(json!({"files": [file()], "params": {"verify_checksum": ""}}))
                .starts_with("Invalid value within the request: /params/verify_checksum: ")
        );
        let mut f = file();
        f["filesize"] = json!(-1);
        assert!(error(json!({"files": [f]})).contains("/files/0/filesize"));
    }

    #[test]
    fn long_values_are_clipped_in_messages() {
        let huge: Vec<u32> = (0..10_000).collect();
        let message = error(json!({"files": [file()], "params": {"verify_checksum": huge}}));
        assert!(message.len() < 4 * MAX_ECHO_LEN, "{}", message.len());
        assert!(message.ends_with("..."));
    }
}
