//! Jobs (`/web/jobs`, filters on job or file states, VO, link, window), one job
//! (`/web/jobs/<id>`: its facts, transfer statistics, every file with its state, progress of
//! the running ones, reason, log and retries) and transfers (`/web/transfers`).

use askama::Template;
use serde_json::Value;

use super::{
    Filters, Layout, Pager, Rendered, Req, bytes, job_link, link, mib_s, render, when, when_opt,
};
use crate::api::error::ApiError;
use crate::model::job::{File, FileState, JobState};

/// ftsmon's `YYYY-MM-DDTHH:MM:SSZ` as the pages show times (`YYYY-MM-DD HH:MM:SS`).
fn mon_time(v: &str) -> String {
    v.trim_end_matches('Z').replace('T', " ")
}

fn value_time(v: &Value) -> String {
    v.as_str().map(mon_time).unwrap_or_default()
}

/// A state select: the options, each with whether it is chosen. A value that is not one of
/// the options (a comma list from a link) is kept as an extra option.
pub struct StateSelect {
    pub name: &'static str,
    pub options: Vec<(String, bool)>,
}

fn state_select(name: &'static str, all: &[&str], current: &str) -> StateSelect {
    let mut options: Vec<(String, bool)> =
        all.iter().map(|s| (s.to_string(), *s == current)).collect();
    if !current.is_empty() && !all.contains(&current) {
        options.push((current.to_string(), true));
    }
    StateSelect { name, options }
}

const JOB_STATES: [&str; 8] = [
    "SUBMITTED",
    "STAGING",
    "ACTIVE",
    "ARCHIVING",
    "FINISHED",
    "FINISHEDDIRTY",
    "FAILED",
    "CANCELED",
];

const FILE_STATES: [&str; 10] = [
    "SUBMITTED",
    "STAGING",
    "STARTED",
    "READY",
    "ACTIVE",
    "ARCHIVING",
    "FINISHED",
    "FAILED",
    "CANCELED",
    "NOT_USED",
];

/// One job of the list.
pub struct JobRow {
    pub job_id: String,
    pub href: String,
    pub submit_time: String,
    pub job_state: String,
    pub vo_name: String,
    pub source_se: String,
    pub dest_se: String,
    /// `FINISHED 3 · FAILED 1`.
    pub files: String,
    pub count: u64,
    pub priority: i32,
    pub job_type: String,
    pub space_token: String,
    pub finished: String,
}

#[derive(Template)]
#[template(path = "web/jobs.html", blocks = ["live"])]
pub struct JobsPage {
    pub layout: Layout,
    pub filters: Filters,
    pub state: StateSelect,
    pub with_file: StateSelect,
    pub rows: Vec<JobRow>,
    pub pager: Pager,
}

pub async fn jobs(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    // The job-id box of the layout.
    let id = req.param("job_id");
    if !id.is_empty() {
        return Ok(Rendered::Redirect(job_link(&id)));
    }
    let page = req.ctx.service.mon_jobs(&req.user, &req.mq).await?;
    let rows = page
        .items
        .iter()
        .map(|j| JobRow {
            job_id: j.job_id.clone(),
            href: job_link(&j.job_id),
            submit_time: mon_time(&j.submit_time),
            job_state: j.job_state.clone(),
            vo_name: j.vo_name.clone(),
            source_se: j.source_se.clone().unwrap_or_default(),
            dest_se: j.dest_se.clone().unwrap_or_default(),
            files: j
                .files
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(" · "),
            count: j.count,
            priority: j.priority,
            job_type: j.job_type.clone(),
            space_token: j.space_token.clone().unwrap_or_default(),
            finished: value_time(&j.job_finished),
        })
        .collect();
    let view = JobsPage {
        layout: req.layout("Jobs", "jobs", req.here("/ftsmon/jobs", &[])),
        filters: Filters::new(req, 1),
        state: state_select("state", &JOB_STATES, &req.param("state")),
        with_file: state_select("with_file", &FILE_STATES, &req.param("with_file")),
        pager: Pager::new(req, "/web/jobs", &page),
        rows,
    };
    render(&view, |v| v.as_live().render(), partial)
}

/// A retried attempt of a file.
pub struct RetryRow {
    pub attempt: u64,
    pub datetime: String,
    pub reason: String,
    pub host: String,
    pub log: String,
}

/// One file of the job page.
pub struct FileRow {
    pub file_id: u64,
    pub state: &'static str,
    pub source_surl: String,
    pub dest_surl: String,
    pub size: String,
    pub throughput: String,
    /// ACTIVE files: bytes done and total, for `<progress>`; percent and live MiB/s as text.
    pub progress: Option<(u64, u64, String, String)>,
    pub start: String,
    pub finish: String,
    pub reason: String,
    pub log: String,
    pub host: String,
    pub retries: Vec<RetryRow>,
}

fn file_row(f: &File, extra: &Value) -> FileRow {
    let size = f.filesize.unwrap_or(f.user_filesize.max(0.0) as u64);
    let progress = (f.file_state == FileState::Active).then(|| {
        let total = size.max(f.transferred).max(1);
        let pct = f.transferred as f64 * 100.0 / total as f64;
        let live = extra["throughput_instant"].as_f64().unwrap_or(0.0);
        (f.transferred, total, format!("{pct:.0} %"), mib_s(live))
    });
    let retries = extra["retries"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| RetryRow {
                    attempt: r["attempt"].as_u64().unwrap_or(0),
                    datetime: value_time(&r["datetime"]),
                    reason: r["reason"].as_str().unwrap_or_default().to_string(),
                    host: r["transfer_host"].as_str().unwrap_or_default().to_string(),
                    log: r["log_url"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    FileRow {
        file_id: f.file_id,
        state: f.file_state.as_str(),
        source_surl: f.source_surl.clone(),
        dest_surl: f.dest_surl.clone(),
        size: if size > 0 { bytes(size) } else { String::new() },
        throughput: f.throughput.map(mib_s).unwrap_or_default(),
        progress,
        start: when_opt(f.start_time),
        finish: when_opt(f.finish_time),
        reason: f.reason.clone().unwrap_or_default(),
        log: extra["log_url"].as_str().unwrap_or_default().to_string(),
        host: f.transfer_host.clone().unwrap_or_default(),
        retries,
    }
}

#[derive(Template)]
#[template(path = "web/job.html", blocks = ["live"])]
pub struct JobPage {
    pub layout: Layout,
    /// (label, value) pairs of the job's header.
    pub facts: Vec<(&'static str, String)>,
    /// (label, value) of the transfer statistics.
    pub stats: Vec<(&'static str, String)>,
    /// File counts per state, each linking to the files in that state.
    pub states: Vec<(String, u64, String)>,
    pub job_state: String,
    /// A terminal job's page does not poll: nothing changes any more.
    pub terminal: bool,
    pub files: Vec<FileRow>,
    pub pager: Pager,
    /// Clears the state filter.
    pub all_href: String,
}

pub async fn job(req: &Req<'_>, id: &str, partial: bool) -> Result<Rendered, ApiError> {
    let s = &req.ctx.service;
    let (job, extra) = s.mon_job(&req.user, id, &req.mq).await?;
    let (files, stats) = s.mon_job_files(&req.user, id, &req.mq).await?;
    let here = job_link(id);
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let secs = |v: &Value| v.as_i64().map(|s| format!("{s} s")).unwrap_or_default();
    let facts = vec![
        ("Job id", job.job_id.clone()),
        ("State", job.job_state.as_str().to_string()),
        ("VO", job.vo_name.clone()),
        ("User", job.user_dn.clone()),
        ("Delegation id", job.cred_id.clone()),
        ("Submitted", when(job.submit_time)),
        ("Finished", when_opt(job.job_finished)),
        ("Duration", secs(&extra["duration"])),
        ("Priority", job.priority.to_string()),
        ("Type", job.job_type.as_str().to_string()),
        ("Submit host", job.submit_host.clone()),
        ("Expiry", value_time(&extra["expiry_time"])),
        ("Retries allowed", job.retry.to_string()),
        ("Overwrite", opt(&job.overwrite_flag)),
        ("Bring online", job.bring_online.to_string()),
        ("Archive timeout", job.archive_timeout.to_string()),
        ("Pin lifetime", job.copy_pin_lifetime.to_string()),
        ("Source space token", opt(&job.source_spacetoken)),
        ("Destination space token", opt(&job.destination_spacetoken)),
        ("Reason", opt(&job.reason)),
        ("Metadata", job.job_metadata.0.clone().unwrap_or_default()),
    ];
    let num = |k: &str| stats[k].as_u64().unwrap_or(0);
    let stats_view = vec![
        (
            "Files done",
            format!(
                "{} of {}",
                num("files_transferred"),
                num("total_files_to_transfer")
            ),
        ),
        (
            "Bytes done",
            format!(
                "{} of {}",
                bytes(num("bytes_transferred")),
                bytes(num("total_size"))
            ),
        ),
        ("First start", value_time(&stats["first_start"])),
        ("Queued for", secs(&stats["queued_first"])),
        ("Transferring for", secs(&stats["time_transfering"])),
        (
            "Live throughput",
            stats["current_throughput"]
                .as_f64()
                .map(|v| format!("{} MiB/s", mib_s(v)))
                .unwrap_or_default(),
        ),
        (
            "Mean throughput",
            stats["avg_throughput"]
                .as_f64()
                .map(|v| format!("{} MiB/s", mib_s(v)))
                .unwrap_or_default(),
        ),
    ];
    let states = extra["states"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(state, n)| {
                    (
                        state.clone(),
                        n.as_u64().unwrap_or(0),
                        link(&here, &[("state", state.as_str())]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let rows = files.items.iter().map(|(f, e)| file_row(f, e)).collect();
    let mut layout = req.layout(
        format!("Job {}", job.job_id),
        "jobs",
        req.here(&format!("/ftsmon/jobs/{}/files", job.job_id), &[]),
    );
    layout.refresh = req.here(&here, &[]);
    let view = JobPage {
        layout,
        facts,
        stats: stats_view,
        states,
        job_state: job.job_state.as_str().to_string(),
        terminal: is_terminal(job.job_state.as_str()),
        pager: Pager::new(req, &here, &files),
        files: rows,
        all_href: here.clone(),
    };
    render(&view, |v| v.as_live().render(), partial)
}

/// One transfer of the list.
pub struct TransferRow {
    pub file_id: u64,
    pub state: String,
    pub job_id: String,
    pub job_href: String,
    pub source_se: String,
    pub dest_se: String,
    pub start: String,
    pub finish: String,
    pub activity: String,
    pub size: String,
}

#[derive(Template)]
#[template(path = "web/transfers.html", blocks = ["live"])]
pub struct TransfersPage {
    pub layout: Layout,
    pub filters: Filters,
    pub state: StateSelect,
    pub activity: String,
    pub hostname: String,
    pub reason: String,
    pub rows: Vec<TransferRow>,
    pub pager: Pager,
}

pub async fn transfers(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let page = req.ctx.service.mon_transfers(&req.user, &req.mq).await?;
    let rows = page
        .items
        .iter()
        .map(|t| TransferRow {
            file_id: t.file_id,
            state: t.file_state.clone(),
            job_id: t.job_id.clone(),
            job_href: link(&job_link(&t.job_id), &[("file", t.file_id.to_string())]),
            source_se: t.source_se.clone(),
            dest_se: t.dest_se.clone(),
            start: value_time(&t.start_time),
            finish: value_time(&t.finish_time),
            activity: t.activity.clone(),
            size: t
                .filesize
                .or(Some(t.user_filesize.max(0.0) as u64))
                .filter(|s| *s > 0)
                .map(bytes)
                .unwrap_or_default(),
        })
        .collect();
    let view = TransfersPage {
        layout: req.layout("Transfers", "transfers", req.here("/ftsmon/transfers", &[])),
        filters: Filters::new(req, 1),
        state: state_select("state", &FILE_STATES, &req.param("state")),
        activity: req.param("activity"),
        hostname: req.param("hostname"),
        reason: req.param("reason"),
        pager: Pager::new(req, "/web/transfers", &page),
        rows,
    };
    render(&view, |v| v.as_live().render(), partial)
}

/// States a job can end in: its page stops refreshing then (nothing changes any more).
pub fn is_terminal(state: &str) -> bool {
    JobState::parse(state).is_some_and(|s| {
        matches!(
            s,
            JobState::Finished | JobState::Failed | JobState::FinishedDirty | JobState::Canceled
        )
    })
}
