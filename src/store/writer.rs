//! Group commit of job submissions for the embedded store. Submissions queue on a bounded channel; one writer thread
//! takes whatever has arrived while the previous commit was being flushed and stores it in a
//! single durable transaction, then answers each submitter. A 2xx therefore still means "on
//! disk", but concurrent clients share the cost of one fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Redb, StoreError};
use crate::model::job::{File, InsertConflict, Job};

/// Submissions waiting for the writer. When full, submitters wait: that is the backpressure
/// that keeps memory bounded under a flood.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most files in one transaction, so one commit stays short and answers are not held back.
pub const MAX_BATCH_FILES: usize = 50_000;

type Reply = Result<Result<(), InsertConflict>, String>;

struct Request {
    job: Job,
    files: Vec<File>,
    reply: oneshot::Sender<Reply>,
}

/// Handle to the writer thread. Dropping it closes the queue and waits for the thread, so the
/// database is released (and every queued submission answered) before the service is gone.
pub struct JobWriter {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for JobWriter {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the job writer thread panicked");
            }
        }
    }
}

impl JobWriter {
    pub fn start(store: Arc<Redb>) -> std::io::Result<JobWriter> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("ftsd-job-writer".into())
            .spawn(move || run(store, rx))?;
        Ok(JobWriter {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Store one job; resolves once it is durable (or refused).
    pub async fn insert(
        &self,
        job: Job,
        files: Vec<File>,
    ) -> Result<Result<(), InsertConflict>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| StoreError::Task("the job writer has stopped".into()))?;
        queue
            .send(Request { job, files, reply })
            .await
            .map_err(|_| StoreError::Task("the job writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("the job writer dropped a submission".into()))?
            .map_err(StoreError::Task)
    }
}

fn run(store: Arc<Redb>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.blocking_recv() {
        let mut files = first.files.len();
        let mut batch = vec![first];
        while files < MAX_BATCH_FILES {
            match rx.try_recv() {
                Ok(next) => {
                    files += next.files.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let mut rows: Vec<(Job, Vec<File>)> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for r in batch {
            rows.push((r.job, r.files));
            replies.push(r.reply);
        }
        let started = std::time::Instant::now();
        match store.insert_jobs(&mut rows) {
            Ok(results) => {
                // One event per commit: batch sizes and commit times are what group commit is
                // tuned by (the benchmark reads them).
                tracing::debug!(
                    jobs = rows.len(),
                    files,
                    commit_us = started.elapsed().as_micros() as u64,
                    "submission batch stored"
                );
                for ((reply, result), (job, _)) in replies.into_iter().zip(results).zip(&rows) {
                    if result.is_ok() {
                        tracing::debug!(job_id = %job.job_id, "job submitted");
                    }
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = rows.len(), "storing submissions failed");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
