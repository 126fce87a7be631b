//! Tape through gfal2 for the schemes whose plugins stage and poll (`root://` with the xrootd
//! plugin, `srm://`, and `http(s)`/`dav(s)` when gfal2 serves them: its http plugin speaks
//! the Tape REST API): the gfal2 backend's [`Session`](super::Session) tape calls.
//!
//! There is no gfal command-line tool for bulk bring-online polling, so each call runs the
//! Python found at start (the one that imports gfal2) with [`SCRIPT`]: it makes one gfal2
//! context, does one list call (`bring_online` asynchronous, `bring_online_poll`,
//! `abort_bring_online`, `release`, `archive_poll` per file) and prints one JSON line: per
//! file `done`, `pending` (gfal2's `EAGAIN`, or a request just queued) or `failed` with
//! gfal2's errno and message, or an error of the whole call. The request goes on stdin, never
//! on the command line; the user's proxy is `X509_USER_PROXY` as for the other tools.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    OpError, OpResult, StageReply, TapeStatus, TapeSupport,
    gfal2::{Gfal2Session, tool_error},
};

/// Schemes whose gfal2 plugin implements bring-online and its polling (gfal2 2.21–2.23:
/// srm, xrootd, http).
const STAGING: &[&str] = &[
    "srm", "root", "roots", "xroot", "xroots", "http", "https", "dav", "davs",
];
/// Schemes whose plugin implements archive polling (xrootd, http).
const ARCHIVE: &[&str] = &[
    "root", "roots", "xroot", "xroots", "http", "https", "dav", "davs",
];
/// Bound on one call: gfal2's own namespace timeout, plus Python's start.
const CALL_LIMIT: Duration = Duration::from_secs(360);
/// What is kept of the script's stdout.
const OUTPUT_LIMIT: usize = 1 << 20;

/// The Python run for each call. Keep it short: it is passed with `-c`.
pub const SCRIPT: &str = r#"
import json, sys
import gfal2
EAGAIN = 11
req = json.loads(sys.stdin.read())
op, urls = req["op"], req["urls"]
def status(e, queued=False):
    if e is None:
        return {"status": "pending" if queued else "done"}
    code = getattr(e, "code", 5)
    if code == EAGAIN:
        return {"status": "pending"}
    return {"status": "failed", "errno": code, "message": str(getattr(e, "message", e))}
try:
    ctx = gfal2.creat_context()
    if op == "stage":
        errors, token = ctx.bring_online(urls, req["pin"], req["timeout"], True)
        out = {"token": token, "files": [status(e, True) for e in errors]}
    elif op == "poll":
        out = {"files": [status(e) for e in ctx.bring_online_poll(urls, req["token"])]}
    elif op == "abort":
        out = {"files": [status(e) for e in ctx.abort_bring_online(urls, req["token"])]}
    elif op == "release":
        out = {"files": [status(e) for e in ctx.release(urls, req["token"])]}
    else:
        files = []
        for u in urls:
            try:
                files.append(status(None) if ctx.archive_poll(u) > 0 else {"status": "pending"})
            except gfal2.GError as e:
                files.append(status(e))
        out = {"files": files}
except gfal2.GError as e:
    out = {"errno": e.code, "message": e.message}
print(json.dumps(out))
"#;

/// What gfal2 can do on tape for `scheme`.
pub fn support(scheme: &str) -> TapeSupport {
    TapeSupport {
        staging: STAGING.contains(&scheme),
        archive_monitoring: ARCHIVE.contains(&scheme),
    }
}

/// One file's status in the script's answer.
pub fn file_status(v: &Value) -> TapeStatus {
    match v["status"].as_str() {
        Some("done") => TapeStatus::Done,
        Some("pending") => TapeStatus::Pending,
        _ => TapeStatus::Failed(OpError::new(
            v["errno"].as_i64().map_or(libc::EIO, |e| e as i32),
            v["message"].as_str().unwrap_or("gfal2 gave no message"),
        )),
    }
}

/// The script's answer: per-file statuses (as many as `n`), or the error of the whole call.
pub fn parse(stdout: &str, n: usize) -> OpResult<(Option<String>, Vec<TapeStatus>)> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: Value = serde_json::from_str(line).map_err(|_| {
        OpError::new(
            libc::ENOMSG,
            "gfal2 tape call: no answer from the gfal2 helper",
        )
    })?;
    if let Some(errno) = v["errno"].as_i64() {
        return Err(OpError::new(
            errno as i32,
            v["message"].as_str().unwrap_or("gfal2 gave no message"),
        ));
    }
    let files: Vec<TapeStatus> = v["files"]
        .as_array()
        .map(|a| a.iter().map(file_status).collect())
        .unwrap_or_default();
    if files.len() != n {
        return Err(OpError::new(
            libc::ENOMSG,
            format!("gfal2 tape call: {} answers for {n} files", files.len()),
        ));
    }
    Ok((v["token"].as_str().map(str::to_string), files))
}

/// Run one call.
async fn call(
    session: &mut Gfal2Session,
    request: Value,
    n: usize,
) -> OpResult<(Option<String>, Vec<TapeStatus>)> {
    let python = session.python();
    let mut stdout = String::new();
    let ended = session
        .run_with_stdin(
            python,
            "gfal2 tape helper",
            &["-c".to_string(), SCRIPT.to_string()],
            request.to_string(),
            Some(CALL_LIMIT),
            &mut |line| {
                if stdout.len() < OUTPUT_LIMIT {
                    stdout.push_str(line);
                    stdout.push('\n');
                }
            },
        )
        .await?;
    if !ended.success() {
        return Err(tool_error("gfal2 tape helper", &ended));
    }
    parse(&stdout, n)
}

pub async fn stage(
    session: &mut Gfal2Session,
    urls: &[String],
    pin_lifetime: i64,
    timeout: u64,
) -> OpResult<StageReply> {
    let request = json!({"op": "stage", "urls": urls, "pin": pin_lifetime, "timeout": timeout});
    let (token, files) = call(session, request, urls.len()).await?;
    Ok(StageReply {
        token: token.unwrap_or_default(),
        files,
    })
}

pub async fn poll(
    session: &mut Gfal2Session,
    token: &str,
    urls: &[String],
) -> OpResult<Vec<TapeStatus>> {
    let request = json!({"op": "poll", "urls": urls, "token": token});
    Ok(call(session, request, urls.len()).await?.1)
}

pub async fn abort(session: &mut Gfal2Session, token: &str, urls: &[String]) -> OpResult<()> {
    let request = json!({"op": "abort", "urls": urls, "token": token});
    call(session, request, urls.len()).await.map(|_| ())
}

pub async fn release(session: &mut Gfal2Session, token: &str, url: &str) -> OpResult<()> {
    let request = json!({"op": "release", "urls": [url], "token": token});
    match call(session, request, 1).await?.1.pop() {
        Some(TapeStatus::Failed(e)) => Err(e),
        _ => Ok(()),
    }
}

pub async fn archive_poll(
    session: &mut Gfal2Session,
    urls: &[String],
) -> OpResult<Vec<TapeStatus>> {
    let request = json!({"op": "archive", "urls": urls});
    Ok(call(session, request, urls.len()).await?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_answers_map_to_statuses() {
        let (token, files) = parse(
            "noise\n{\"token\": \"t1\", \"files\": [{\"status\": \"pending\"}, {\"status\": \"done\"}, {\"status\": \"failed\", \"errno\": 2, \"message\": \"[gfal_xrootd] no such file\"}]}\n",
            3,
        )
        .unwrap();
        assert_eq!(token.as_deref(), Some("t1"));
        assert_eq!(
            files,
            [
                TapeStatus::Pending,
                TapeStatus::Done,
                TapeStatus::Failed(OpError::new(2, "[gfal_xrootd] no such file"))
            ]
        );
        assert_eq!(
            parse(
                "{\"errno\": 95, \"message\": \"Operation not supported\"}",
                1
            )
            .unwrap_err(),
            OpError::new(95, "Operation not supported")
        );
        assert_eq!(parse("{\"files\": []}", 1).unwrap_err().errno, libc::ENOMSG);
        assert_eq!(parse("Traceback", 1).unwrap_err().errno, libc::ENOMSG);
        assert!(support("root").staging && support("srm").staging);
        assert!(!support("srm").archive_monitoring && !support("gsiftp").staging);
    }
}
