//! `/jobs`, `/jobs/{ids}`, their sub-resources, `/files`, `/admin/force-start` and the
//! submission schema. JSON views carry the reference's names (§5) plus the older names the
//! original FTS3 REST documentation shows, so scripts written against either keep working.

use serde_json::{Map, Value, json};
use warp::{
    http::{Method, StatusCode},
    reply::Response,
};

use super::{
    Ctx,
    error::{ApiError, json_response, status_line},
    input,
};
use crate::{
    model::job::JobChange,
    model::{
        job::{File, Job, JobType},
        submit_schema,
        time::fts_datetime,
    },
    service::jobs::{FilesQuery, JobError, ListQuery, PriorityRequest, SubmitRequest},
};

/// Largest submission body: 10,000 transfers with metadata fit comfortably.
pub const MAX_SUBMIT_BODY: usize = 16 * 1024 * 1024;
/// Largest body of the small JSON endpoints (priority, force-start).
pub const MAX_SMALL_BODY: usize = 1024 * 1024;

fn time_value(t: Option<i64>) -> Value {
    t.map(|t| Value::String(fts_datetime(t)))
        .unwrap_or(Value::Null)
}

/// The job as the reference serialises it, plus legacy names.
pub fn job_json(job: &Job) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("job_id", json!(job.job_id));
    put("source_se", json!(job.source_se));
    put("dest_se", json!(job.dest_se));
    put("job_state", json!(job.job_state.as_str()));
    put("job_type", json!(job.job_type.as_str()));
    put("cancel_job", json!(job.cancel_job));
    put("submit_host", json!(job.submit_host));
    put("user_dn", json!(job.user_dn));
    put("cred_id", json!(job.cred_id));
    put("vo_name", json!(job.vo_name));
    put("voms_cred", json!(job.voms_cred));
    put("reason", json!(job.reason));
    put("submit_time", time_value(Some(job.submit_time)));
    put("priority", json!(job.priority));
    put("max_time_in_queue", json!(job.max_time_in_queue));
    put("destination_spacetoken", json!(job.destination_spacetoken));
    put("source_spacetoken", json!(job.source_spacetoken));
    put("internal_job_params", json!(job.internal_job_params));
    put("dst_file_report", json!(job.dst_file_report));
    put("overwrite_flag", json!(job.overwrite_flag));
    put("job_finished", time_value(job.job_finished));
    put("copy_pin_lifetime", json!(job.copy_pin_lifetime));
    put("verify_checksum", json!(job.checksum_method));
    put("bring_online", json!(job.bring_online));
    put("archive_timeout", json!(job.archive_timeout));
    put("target_qos", json!(job.target_qos));
    put("job_metadata", job.job_metadata.to_value());
    put("retry", json!(job.retry));
    put("retry_delay", json!(job.retry_delay));
    put("os_project_id", json!(job.os_project_id));
    // Names of the original FTS3 REST documentation (Pylons / 3.12 and earlier).
    put("space_token", json!(job.destination_spacetoken));
    put("source_space_token", json!(job.source_spacetoken));
    put("checksum_method", json!(job.checksum_method));
    put("reuse_job", json!(job.job_type == JobType::SessionReuse));
    put("agent_dn", Value::Null);
    put("user_cred", Value::Null);
    m
}

/// The file as the reference serialises it, plus legacy names.
pub fn file_json(f: &File) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("file_id", json!(f.file_id));
    put("file_index", json!(f.file_index));
    put("job_id", json!(f.job_id));
    put("file_state", json!(f.file_state.as_str()));
    put("transfer_host", json!(f.transfer_host));
    put("source_surl", json!(f.source_surl));
    put("dest_surl", json!(f.dest_surl));
    put("source_se", json!(f.source_se));
    put("dest_se", json!(f.dest_se));
    put("staging_host", json!(f.staging_host));
    put("reason", json!(f.reason));
    put("recoverable", json!(f.current_failures > 0));
    put("filesize", json!(f.filesize));
    put("checksum", json!(f.checksum));
    put("finish_time", time_value(f.finish_time));
    put("start_time", time_value(f.start_time));
    put("internal_file_params", json!(f.internal_file_params));
    put("pid", json!(f.pid));
    put("tx_duration", json!(f.tx_duration));
    put("throughput", json!(f.throughput));
    put("retry", json!(f.retry));
    put("user_filesize", json!(f.user_filesize));
    put("file_metadata", f.file_metadata.to_value());
    put("selection_strategy", json!(f.selection_strategy));
    put("staging_start", time_value(f.staging_start));
    put("staging_finished", time_value(f.staging_finished));
    put("bringonline_token", json!(f.bringonline_token));
    put("log_file", json!(f.log_file));
    // The log over HTTPS, beside the path FTS3 clients know (served to whoever may see the job).
    put(
        "log_url",
        json!(
            f.log_file
                .as_ref()
                .map(|_| crate::service::monitor::log_url(&f.job_id, f.file_id))
        ),
    );
    put("log_debug", json!(f.log_debug));
    put("hashed_id", json!(f.hashed_id));
    put("vo_name", json!(f.vo_name));
    put("activity", json!(f.activity));
    put("priority", json!(f.priority));
    put("dest_surl_uuid", json!(f.dest_surl_uuid));
    put("archive_start_time", time_value(f.archive_start_time));
    put("archive_finish_time", time_value(f.archive_finish_time));
    put("staging_metadata", f.staging_metadata.to_value());
    put("archive_metadata", f.archive_metadata.to_value());
    put("scitag", json!(f.scitag));
    put("src_token_id", json!(f.src_token_id));
    put("dst_token_id", json!(f.dst_token_id));
    put("file_state_initial", json!(f.file_state_initial));
    put("transferred", json!(f.transferred));
    // Older names.
    put("transferhost", json!(f.transfer_host));
    put("num_failures", json!(f.current_failures));
    put("current_failures", json!(f.current_failures));
    put("error_scope", json!(f.error_scope));
    put("error_phase", json!(f.error_phase));
    put("reason_class", json!(f.reason_class));
    put("symbolicname", Value::Null);
    m
}

fn error_entry(e: &JobError) -> (StatusCode, Value) {
    let (status, message) = match e {
        JobError::NotFound(id) => (
            StatusCode::NOT_FOUND,
            format!("No job with the id \"{id}\" has been found"),
        ),
        JobError::Forbidden(id) => (
            StatusCode::FORBIDDEN,
            format!("Not enough permissions to check the job \"{id}\""),
        ),
    };
    (
        status,
        json!({"job_id": e.job_id(), "http_status": status_line(status), "http_message": message}),
    )
}

/// The single-job error in the standard error shape (sub-resources).
fn job_error(e: JobError) -> ApiError {
    let (status, entry) = error_entry(&e);
    ApiError::new(status, entry["http_message"].as_str().unwrap_or_default())
}

/// Ids of a `/jobs/{ids}` path: split on commas, keeping empties for the shaping rule.
fn split_ids(path: &str) -> (Vec<String>, bool) {
    let parts: Vec<&str> = path.split(',').collect();
    let multiple = parts.len() > 1;
    (
        parts
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        multiple,
    )
}

/// One object for one id, an array (207 if anything failed) for several.
fn shape(entries: Vec<(StatusCode, Value)>, multiple: bool) -> Response {
    if !multiple {
        if let Some((status, value)) = entries.into_iter().next() {
            return json_response(status, &value);
        }
        return ApiError::not_found().into_response();
    }
    let any_failed = entries.iter().any(|(s, _)| !s.is_success());
    let values: Vec<Value> = entries.into_iter().map(|(_, v)| v).collect();
    let status = if any_failed {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    };
    json_response(status, &values)
}

pub async fn submit(
    ctx: Ctx,
    method: Method,
    content_type: Option<String>,
    body: super::body::Body,
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let value = input::as_dict(&method, content_type.as_deref(), &body)?;
    // The body's share of the budget stays held while its parsed form is in use.
    let job_id = ctx
        .service
        .submit(&user, SubmitRequest::parse(value), ctx.bearer())
        .await?;
    drop(body);
    Ok(json_response(StatusCode::OK, &json!({"job_id": job_id})))
}

pub fn schema() -> Response {
    json_response(StatusCode::OK, submit_schema::schema())
}

pub async fn list(ctx: &Ctx, q: ListQuery, fields: Option<String>) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let jobs = ctx.service.list_jobs(&user, &q).await?;
    let wanted: Option<Vec<&str>> = fields.as_deref().map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let out: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let full = job_json(j);
            match &wanted {
                Some(names) => Value::Object(
                    names
                        .iter()
                        .filter_map(|n| full.get(*n).map(|v| (n.to_string(), v.clone())))
                        .collect(),
                ),
                None => Value::Object(full),
            }
        })
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn get(ctx: &Ctx, path: &str, files: Option<String>) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (ids, multiple) = split_ids(path);
    let file_fields: Option<Vec<String>> = files.map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    let results = ctx
        .service
        .get_jobs(&user, &ids, file_fields.is_some())
        .await?;
    let entries = results
        .iter()
        .map(|r| match r {
            Ok((job, job_files)) => {
                let mut m = job_json(job);
                if let Some(fields) = &file_fields {
                    let projected: Vec<Value> = job_files
                        .iter()
                        .map(|f| {
                            let full = file_json(f);
                            Value::Object(
                                fields
                                    .iter()
                                    .filter_map(|n| full.get(n).map(|v| (n.clone(), v.clone())))
                                    .collect(),
                            )
                        })
                        .collect();
                    m.insert("files".into(), Value::Array(projected));
                }
                m.insert("http_status".into(), json!("200 Ok"));
                (StatusCode::OK, Value::Object(m))
            }
            Err(e) => error_entry(e),
        })
        .collect();
    Ok(shape(entries, multiple))
}

fn changes(results: Vec<Result<JobChange, JobError>>, multiple: bool) -> Response {
    let entries = results
        .into_iter()
        .map(|r| match r {
            Ok(JobChange::Changed(job)) => {
                let mut m = job_json(&job);
                m.insert("http_status".into(), json!("200 Ok"));
                m.insert("http_message".into(), Value::Null);
                (StatusCode::OK, Value::Object(m))
            }
            Ok(JobChange::Terminal(job)) => {
                let mut m = job_json(&job);
                m.insert("http_status".into(), json!("304 Not Modified"));
                m.insert(
                    "http_message".into(),
                    json!("The job is in a terminal state"),
                );
                // The 304 lives only inside the body: the request itself succeeded.
                (StatusCode::OK, Value::Object(m))
            }
            Err(e) => error_entry(&e),
        })
        .collect();
    shape(entries, multiple)
}

pub async fn cancel(ctx: &Ctx, path: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (ids, multiple) = split_ids(path);
    Ok(changes(
        ctx.service.cancel_jobs(&user, &ids).await?,
        multiple,
    ))
}

pub async fn modify(
    ctx: &Ctx,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let value = input::as_dict(&Method::POST, content_type, body)?;
    let priority = PriorityRequest::parse(&value)?;
    let (ids, multiple) = split_ids(path);
    Ok(changes(
        ctx.service.set_priority(&user, &ids, priority).await?,
        multiple,
    ))
}

pub async fn field(ctx: &Ctx, id: &str, field: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (job, _) = ctx
        .service
        .job_detail(&user, id)
        .await?
        .map_err(job_error)?;
    match job_json(&job).get(field) {
        Some(v) => Ok(json_response(StatusCode::OK, v)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "No such field")),
    }
}

pub async fn files(ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (_, mut files) = ctx
        .service
        .job_detail(&user, id)
        .await?
        .map_err(job_error)?;
    ctx.service.live_progress(&mut files);
    let out: Vec<Value> = files
        .iter()
        .map(|f| {
            let mut m = file_json(f);
            m.insert("retries".into(), json!([]));
            Value::Object(m)
        })
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /jobs/{id}/files/{file_id}/retries`: the failed attempts that were retried.
/// Unlike the reference (whose file check never fails), the file must belong to the job: a
/// job's owner must not read another job's history through their own job id.
pub async fn file_retries(ctx: &Ctx, id: &str, file_id: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (_, files) = ctx
        .service
        .job_detail(&user, id)
        .await?
        .map_err(job_error)?;
    let file = file_id
        .parse::<u64>()
        .ok()
        .filter(|fid| files.iter().any(|f| f.file_id == *fid))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No file with the id \"{file_id}\" has been found"),
            )
        })?;
    let rows: Vec<Value> = ctx
        .service
        .file_retries(file)
        .await?
        .into_iter()
        .map(|r| {
            let url = r
                .log_file
                .as_ref()
                .map(|_| crate::service::monitor::retry_log_url(id, file, r.attempt));
            json!({"file_id": file, "attempt": r.attempt, "datetime": fts_datetime(r.datetime),
                   "reason": r.reason, "transfer_host": r.transfer_host, "log_file": r.log_file,
                   "log_url": url})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &rows))
}

/// Data-management rows: deletion jobs are no longer supported, so always empty.
pub async fn empty_sub_list(ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .job_detail(&user, id)
        .await?
        .map_err(job_error)?;
    Ok(json_response(StatusCode::OK, &json!([])))
}

pub async fn cancel_files(ctx: &Ctx, id: &str, file_ids: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let ids: Vec<String> = file_ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let entries = ctx
        .service
        .cancel_files(&user, id, &ids)
        .await?
        .map_err(job_error)?;
    if entries.len() == 1 {
        Ok(json_response(StatusCode::OK, &entries[0]))
    } else {
        Ok(json_response(StatusCode::OK, &entries))
    }
}

pub async fn cancel_all(ctx: &Ctx, vo: Option<&str>) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let counts = ctx.service.cancel_all(&user, vo).await?;
    Ok(json_response(StatusCode::OK, &counts))
}

pub async fn list_files(ctx: &Ctx, q: FilesQuery) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let files = ctx.service.list_files(&user, &q).await?;
    let out: Vec<Value> = files.iter().map(|f| Value::Object(file_json(f))).collect();
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn force_start(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, m);
    if content_type.map(str::trim) != Some("application/json") {
        return Err(bad("Only accepts 'Content-Type: application/json'"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| bad("Malformed input"))?;
    let ids: Vec<u64> = value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| bad("Only accepts a list of integer fileIDs"))?;
    let problems = ctx.service.force_start(&user, &ids).await?;
    let out: Vec<Value> = problems
        .into_iter()
        .map(|(id, error)| json!({"file_id": id, "error": error}))
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}
