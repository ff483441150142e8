//! Group commit: one writer thread owns the writer connection and drains a queue of write
//! jobs. The jobs waiting when it looks form one batch: one `BEGIN IMMEDIATE`, each job in its
//! own `SAVEPOINT` (a job that fails rolls back its own writes only and gets its own error),
//! one `COMMIT` — one fsync for the whole batch — and only then is each job's waiter answered.
//! **Nothing is acknowledged before the commit that holds it returned**; if the commit fails,
//! every job of the batch gets an error.
//!
//! Batches form by themselves: while one commit waits for the disk, the next jobs queue up.
//! A batch is capped in jobs and in bytes so a waiter's latency stays bounded by one batch.
//! One writer keeps every write in one order, so the feeds' autoincrement cursors are commit
//! order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Most jobs in one batch.
pub const MAX_BATCH_JOBS: usize = 256;
/// Most bytes (as the jobs declare them) in one batch, past its first job.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// A queued write, its type erased: run once inside the batch, then answered once the batch's
/// fate is known.
trait Pending: Send {
    /// Runs the job's SQL inside its savepoint and keeps its result.
    fn run(&mut self, conn: &Connection);
    /// Answers the waiter: the kept result if the batch committed (`failed` is `None`), else
    /// an error saying why nothing was stored.
    fn finish(self: Box<Self>, failed: Option<&str>);
}

struct Typed<R, F> {
    f: Option<F>,
    out: Option<Result<R>>,
    tx: oneshot::Sender<Result<R>>,
}

impl<R, F> Pending for Typed<R, F>
where
    F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(f) = self.f.take() {
            self.out = Some(in_savepoint(conn, f));
        }
    }

    fn finish(self: Box<Self>, failed: Option<&str>) {
        let answer = match (failed, self.out) {
            (None, Some(out)) => out,
            (Some(why), _) => Err(Error::Internal(format!(
                "the write was not stored: {why}; retry"
            ))),
            (None, None) => Err(Error::Internal("the write was not run; retry".into())),
        };
        // The waiter may have gone (its request was cancelled): the write stands.
        let _ = self.tx.send(answer);
    }
}

struct Job {
    bytes: usize,
    pending: Box<dyn Pending>,
}

/// The handle the store keeps: sends jobs to the writer thread; dropping it lets the thread
/// finish the queued jobs, close the connection and end.
#[derive(Debug)]
pub struct GroupWriter {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupWriter {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> Result<GroupWriter> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))?;
        Ok(GroupWriter {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` inside the next batch's transaction (in its own savepoint) and resolves with
    /// its result once that batch committed. `bytes` is about how much `f` writes (for the
    /// batch's byte cap).
    pub async fn write<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let pending = Box::new(Typed {
            f: Some(f),
            out: None,
            tx,
        });
        let sender = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Internal("the database writer has stopped".into()))?;
        sender
            .send(Job { bytes, pending })
            .map_err(|_| Error::Internal("the database writer has stopped".into()))?;
        rx.await.map_err(|_| {
            Error::Internal("the database writer stopped before answering; retry".into())
        })?
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        drop(self.jobs.take());
        // Waits for the queued jobs and the connection's close, so the file is released when
        // the store is gone (a reopen then finds everything acknowledged, and nothing open).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` in a savepoint: released on success, rolled back (its writes only) on error or
/// panic.
fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    conn.execute_batch("SAVEPOINT job")?;
    let out = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(out) => out,
        Err(_) => Err(Error::Internal("a database write panicked".into())),
    };
    let out = match out {
        Ok(r) => match conn.execute_batch("RELEASE job") {
            Ok(()) => return Ok(r),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    // If SQLite already rolled back the whole transaction (some I/O errors do), the savepoint
    // is gone: the batch notices by the connection being in autocommit.
    if !conn.is_autocommit() && conn.execute_batch("ROLLBACK TO job; RELEASE job").is_err() {
        // The job's writes cannot be undone alone: undo the whole batch rather than commit
        // them beside an error.
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH_JOBS);
    while let Ok(first) = rx.recv() {
        let mut bytes = first.bytes;
        batch.push(first);
        while batch.len() < MAX_BATCH_JOBS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.bytes;
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch);
    }
}

/// One transaction for `batch`, then every waiter answered.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let failed = match conn.execute_batch("BEGIN IMMEDIATE") {
        Err(e) => Some(format!("the database could not begin a transaction: {e}")),
        Ok(()) => {
            let mut lost = None;
            for job in batch.iter_mut() {
                job.pending.run(conn);
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (some I/O errors do): what ran
                    // is gone and the rest is not run.
                    lost = Some("the database rolled the batch's transaction back".to_owned());
                    break;
                }
            }
            match lost {
                Some(why) => Some(why),
                None => match conn.execute_batch("COMMIT") {
                    Ok(()) => None,
                    Err(e) => {
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                        Some(format!("the database commit failed: {e}"))
                    }
                },
            }
        }
    };
    for job in batch.drain(..) {
        job.pending.finish(failed.as_deref());
    }
}
