//! Request bodies the reference's way (`get_input_as_dict`, §1.6 of the API spec): JSON for
//! `application/json` and for any PUT, form fields for `application/x-www-form-urlencoded`,
//! the historic WebFTS double content type, and the reference's messages otherwise.

use warp::http::{Method, StatusCode};

use super::error::ApiError;

/// Parse a body into a JSON object.
pub fn as_dict(
    method: &Method,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, m);
    let ct = content_type.unwrap_or("").trim();
    let value = if ct == "application/json, application/x-www-form-urlencoded" {
        let text = String::from_utf8_lossy(body);
        let decoded: String = form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        serde_json::from_str(&decoded).map_err(|_| bad("Badly formatted JSON request"))?
    } else if ct.starts_with("application/json") || *method == Method::PUT {
        serde_json::from_slice(body).map_err(|_| bad("Badly formatted JSON request"))?
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        let map: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
        serde_json::Value::Object(map)
    } else {
        return Err(bad(
            "Expecting application/json or application/x-www-form-urlencoded",
        ));
    };
    if !value.is_object() {
        return Err(bad("Expecting a dictionary"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_reference() {
        let post = Method::POST;
        assert!(as_dict(&post, Some("application/json"), b"{\"a\": 1}").is_ok());
        assert!(as_dict(&Method::PUT, None, b"{\"a\": 1}").is_ok());
        let e = as_dict(&Method::PUT, None, b"thisXisXnotXjson").unwrap_err();
        assert_eq!(e.message, "Badly formatted JSON request");
        let e = as_dict(&post, None, b"{}").unwrap_err();
        assert_eq!(
            e.message,
            "Expecting application/json or application/x-www-form-urlencoded"
        );
        let e = as_dict(&post, Some("application/json"), b"[1]").unwrap_err();
        assert_eq!(e.message, "Expecting a dictionary");
        let v = as_dict(
            &post,
            Some("application/x-www-form-urlencoded"),
            b"storage=mock%3A%2F%2Fa&status=cancel",
        )
        .unwrap();
        assert_eq!(v["storage"], "mock://a");
        let v = as_dict(
            &post,
            Some("application/json, application/x-www-form-urlencoded"),
            b"%7B%22a%22%3A%201%7D",
        )
        .unwrap();
        assert_eq!(v["a"], 1);
    }
}
