//! `nines.ckpt.v1.Checkpoint`: requests are checked against limits before anything is proposed,
//! then proposed through the replicated log (or queued, for asynchronous checkpoints' writes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nines_consensus::metrics::{Counter, Histogram, LATENCY_BOUNDS_S};
use nines_consensus::{ProposeError, ReadMode, ServiceHandle, StateMachine};
use nines_core::{limits as core_limits, AisError, ErrorCode};
use nines_proto::{ckpt::v1 as pb, status_from_ais};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::{
    convert::{
        attrs_from_pb, attrs_to_pb, check_write_sizes, status_to_pb, write_sizes, writes_from_pb,
    },
    limits, CkptCommand, CkptResponse, CkptState, SectionRead, UpdateMode,
};

/// The longest deadline a client may ask for.
const TIMEOUT_MAX_MS: u64 = 60_000;
/// Asynchronous writes queued on this agent before callers get TRY_AGAIN.
pub const ASYNC_QUEUE_LEN: usize = 4_096;
/// Bytes of asynchronous writes (their section data, plus [`ASYNC_WRITE_OVERHEAD_BYTES`] each)
/// queued on this agent before callers get TRY_AGAIN: the queue's memory bound, whatever the
/// writes' sizes (4,096 writes of 4 MiB would be 16 GiB).
pub const ASYNC_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// What one queued asynchronous write counts besides its data.
const ASYNC_WRITE_OVERHEAD_BYTES: usize = 256;

/// The operations [`CkptMetrics::ops`] counts, in its order.
pub const OPS: [&str; 9] = [
    "open",
    "close",
    "unlink",
    "create_section",
    "delete_section",
    "write",
    "set_expiration",
    "read",
    "other",
];

/// The checkpoint service's counters on this agent (process-wide; the agent renders them).
#[derive(Debug)]
pub struct CkptMetrics {
    /// Requests served, by operation ([`OPS`]).
    pub ops: [Counter; OPS.len()],
    /// Requests that failed (refused, or not committed).
    pub errors: Counter,
    /// Section bytes written (create and write).
    pub bytes_written: Counter,
    /// Section bytes read.
    pub bytes_read: Counter,
    /// Time to serve an operation (a proposal's commit and apply, or a read).
    pub latency: Histogram,
    /// Asynchronous writes refused because this agent's queue was full (in writes or bytes).
    pub async_refused: Counter,
}

/// This process's checkpoint metrics.
pub static METRICS: CkptMetrics = CkptMetrics {
    ops: [const { Counter::new() }; OPS.len()],
    errors: Counter::new(),
    bytes_written: Counter::new(),
    bytes_read: Counter::new(),
    latency: Histogram::new(LATENCY_BOUNDS_S),
    async_refused: Counter::new(),
};

/// The index in [`OPS`] of a command, and the section bytes it writes.
fn op_of(cmd: &CkptCommand) -> (usize, u64) {
    match cmd {
        CkptCommand::Open { .. } => (0, 0),
        CkptCommand::Close { .. } => (1, 0),
        CkptCommand::Unlink { .. } => (2, 0),
        CkptCommand::CreateSection { data, .. } => (3, data.len() as u64),
        CkptCommand::DeleteSection { .. } => (4, 0),
        CkptCommand::Write { writes, .. } => (5, writes.iter().map(|w| w.data.len() as u64).sum()),
        CkptCommand::SetExpiration { .. } => (6, 0),
        _ => (8, 0),
    }
}

/// The checkpoint service's view of the replicated state.
pub type CkptHandle<M> = ServiceHandle<M, CkptCommand, CkptResponse, CkptState>;

/// The gRPC service. Generic over the composite state machine it lives in.
pub struct CkptService<M: StateMachine> {
    handle: CkptHandle<M>,
    async_tx: mpsc::Sender<(CkptCommand, usize)>,
    /// Bytes queued for asynchronous writes (at most [`ASYNC_QUEUE_BYTES_MAX`]).
    async_bytes: Arc<AtomicUsize>,
}

impl<M: StateMachine> CkptService<M> {
    /// The service over `handle`. Spawns the task that proposes asynchronous checkpoints'
    /// writes in arrival order.
    pub fn new(handle: CkptHandle<M>) -> Self {
        let (async_tx, rx) = mpsc::channel(ASYNC_QUEUE_LEN);
        let async_bytes = Arc::new(AtomicUsize::new(0));
        tokio::spawn(propose_async_writes(
            handle.clone(),
            rx,
            async_bytes.clone(),
        ));
        Self {
            handle,
            async_tx,
            async_bytes,
        }
    }
}

/// Propose queued asynchronous writes one by one, in order; failures are logged (the caller was
/// acknowledged already — that is what asynchronous means).
async fn propose_async_writes<M: StateMachine>(
    handle: CkptHandle<M>,
    mut rx: mpsc::Receiver<(CkptCommand, usize)>,
    queued_bytes: Arc<AtomicUsize>,
) {
    while let Some((cmd, cost)) = rx.recv().await {
        queued_bytes.fetch_sub(cost, Ordering::AcqRel);
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        match handle.propose(cmd, timeout).await {
            Ok(CkptResponse::Error(e)) => {
                tracing::warn!("asynchronous checkpoint write refused: {e}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("asynchronous checkpoint write not committed: {e}"),
        }
    }
}

fn deadline(opts: Option<&pb::Options>) -> Duration {
    let ms = opts.map_or(0, |o| o.timeout_ms);
    Duration::from_millis(if ms == 0 {
        core_limits::CLIENT_TIMEOUT_MS
    } else {
        ms.min(TIMEOUT_MAX_MS)
    })
}

fn err(code: ErrorCode, msg: impl Into<String>) -> Status {
    status_from_ais(&AisError::new(code, msg))
}

fn propose_err(e: ProposeError) -> Status {
    status_from_ais(&e.into())
}

fn mode(stale: bool) -> ReadMode {
    if stale {
        ReadMode::Stale
    } else {
        ReadMode::Linearizable
    }
}

/// The log index of a `Done`, or the error a response carries.
fn done(r: CkptResponse) -> Result<u64, Status> {
    match r {
        CkptResponse::Done { index } => Ok(index),
        CkptResponse::Error(e) => Err(status_from_ais(&e)),
        other => Err(err(
            ErrorCode::Library,
            format!("unexpected response {other:?}"),
        )),
    }
}

impl<M: StateMachine> CkptService<M> {
    async fn propose(&self, cmd: CkptCommand, timeout: Duration) -> Result<CkptResponse, Status> {
        let (op, bytes) = op_of(&cmd);
        let started = tokio::time::Instant::now();
        let r = self.handle.propose(cmd, timeout).await;
        let m = &METRICS;
        m.latency.observe(started.elapsed());
        m.ops[op].inc();
        match &r {
            Ok(CkptResponse::Error(_)) | Err(_) => m.errors.inc(),
            Ok(_) => m.bytes_written.add(bytes),
        }
        r.map_err(propose_err)
    }

    /// Refuse, before proposing, data that cannot fit the checkpoint's limits (TOO_BIG) and
    /// requests beyond the service's; returns the checkpoint's update mode.
    async fn precheck_write(
        &self,
        ckpt: &str,
        sizes: &[u64],
        timeout: Duration,
    ) -> Result<UpdateMode, Status> {
        check_write_sizes(sizes).map_err(|e| status_from_ais(&e))?;
        let name = ckpt.to_string();
        let attrs = self
            .handle
            .read(ReadMode::Stale, timeout, move |s: &CkptState| {
                s.attributes(&name).cloned()
            })
            .await
            .map_err(propose_err)?
            .ok_or_else(|| {
                err(
                    ErrorCode::NotExist,
                    format!("checkpoint '{ckpt}' does not exist"),
                )
            })?;
        if let Some(big) = sizes.iter().find(|&&s| s > attrs.section_size_max) {
            return Err(err(
                ErrorCode::TooBig,
                format!("{big} bytes exceed checkpoint '{ckpt}''s section_size_max of {}; nothing was written", attrs.section_size_max),
            ));
        }
        Ok(attrs.update_mode)
    }
}

#[tonic::async_trait]
impl<M: StateMachine> pb::checkpoint_server::Checkpoint for CkptService<M> {
    async fn open(
        &self,
        req: Request<pb::OpenRequest>,
    ) -> Result<Response<pb::OpenResponse>, Status> {
        let r = req.into_inner();
        let create = if r.create {
            Some(
                attrs_from_pb(r.attributes.as_ref())
                    .map_err(|m| err(ErrorCode::InvalidParam, m))?,
            )
        } else {
            None
        };
        let cmd = CkptCommand::Open {
            name: r.name,
            create,
        };
        match self.propose(cmd, deadline(r.options.as_ref())).await? {
            CkptResponse::Opened {
                handle,
                created,
                attributes,
            } => Ok(Response::new(pb::OpenResponse {
                handle,
                created,
                attributes: Some(attrs_to_pb(&attributes)),
            })),
            other => done(other).map(|_| Response::new(pb::OpenResponse::default())),
        }
    }

    async fn close(
        &self,
        req: Request<pb::CloseRequest>,
    ) -> Result<Response<pb::CloseResponse>, Status> {
        let r = req.into_inner();
        done(
            self.propose(
                CkptCommand::Close { handle: r.handle },
                deadline(r.options.as_ref()),
            )
            .await?,
        )?;
        Ok(Response::new(pb::CloseResponse {}))
    }

    async fn unlink(
        &self,
        req: Request<pb::UnlinkRequest>,
    ) -> Result<Response<pb::UnlinkResponse>, Status> {
        let r = req.into_inner();
        done(
            self.propose(
                CkptCommand::Unlink { name: r.name },
                deadline(r.options.as_ref()),
            )
            .await?,
        )?;
        Ok(Response::new(pb::UnlinkResponse {}))
    }

    async fn create_section(
        &self,
        req: Request<pb::CreateSectionRequest>,
    ) -> Result<Response<pb::CreateSectionResponse>, Status> {
        let r = req.into_inner();
        let timeout = deadline(r.options.as_ref());
        self.precheck_write(&r.checkpoint, &[r.data.len() as u64], timeout)
            .await?;
        let cmd = CkptCommand::CreateSection {
            ckpt: r.checkpoint,
            section: (!r.section.is_empty()).then_some(r.section),
            data: r.data,
            expires_at_ms: r.expires_at_ms,
            epoch: r.epoch,
        };
        match self.propose(cmd, timeout).await? {
            CkptResponse::SectionCreated { section } => {
                Ok(Response::new(pb::CreateSectionResponse { section }))
            }
            other => done(other).map(|_| Response::new(pb::CreateSectionResponse::default())),
        }
    }

    async fn delete_section(
        &self,
        req: Request<pb::DeleteSectionRequest>,
    ) -> Result<Response<pb::DeleteSectionResponse>, Status> {
        let r = req.into_inner();
        let cmd = CkptCommand::DeleteSection {
            ckpt: r.checkpoint,
            section: r.section,
            epoch: r.epoch,
        };
        done(self.propose(cmd, deadline(r.options.as_ref())).await?)?;
        Ok(Response::new(pb::DeleteSectionResponse {}))
    }

    async fn write(
        &self,
        req: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = req.into_inner();
        let timeout = deadline(r.options.as_ref());
        let sizes = write_sizes(&r.writes);
        let mode = self.precheck_write(&r.checkpoint, &sizes, timeout).await?;
        let writes = writes_from_pb(r.writes).map_err(|e| status_from_ais(&e))?;
        let cmd = CkptCommand::Write {
            ckpt: r.checkpoint,
            writes,
            epoch: r.epoch,
        };
        if mode == UpdateMode::Async {
            let (op, bytes) = op_of(&cmd);
            METRICS.ops[op].inc();
            METRICS.bytes_written.add(bytes);
            let cost = bytes as usize + ASYNC_WRITE_OVERHEAD_BYTES;
            let reserved = self
                .async_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + cost <= ASYNC_QUEUE_BYTES_MAX).then_some(queued + cost)
                })
                .is_ok();
            let queue_full = || {
                METRICS.async_refused.inc();
                err(
                    ErrorCode::TryAgain,
                    format!(
                        "this agent's asynchronous write queue is full ({ASYNC_QUEUE_LEN} writes \
                         or {ASYNC_QUEUE_BYTES_MAX} bytes); retry shortly"
                    ),
                )
            };
            if !reserved {
                return Err(queue_full());
            }
            if self.async_tx.try_send((cmd, cost)).is_err() {
                self.async_bytes.fetch_sub(cost, Ordering::AcqRel);
                return Err(queue_full());
            }
            return Ok(Response::new(pb::WriteResponse { index: 0 }));
        }
        let index = done(self.propose(cmd, timeout).await?)?;
        Ok(Response::new(pb::WriteResponse { index }))
    }

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let r = req.into_inner();
        if r.reads.is_empty() || r.reads.len() > limits::WRITES_PER_CALL_MAX {
            return Err(err(
                ErrorCode::InvalidParam,
                format!("a read names 1 to {} sections", limits::WRITES_PER_CALL_MAX),
            ));
        }
        let reads: Vec<SectionRead> = r
            .reads
            .into_iter()
            .map(|s| SectionRead {
                section: s.section,
                offset: s.offset,
                len: s.len,
            })
            .collect();
        let name = r.checkpoint;
        let started = tokio::time::Instant::now();
        let got = self
            .handle
            .read(
                mode(r.stale),
                deadline(r.options.as_ref()),
                move |s: &CkptState| s.read(&name, &reads),
            )
            .await;
        let m = &METRICS;
        m.latency.observe(started.elapsed());
        m.ops[7].inc();
        if !matches!(got, Ok(Ok(_))) {
            m.errors.inc();
        }
        let got = got.map_err(propose_err)?.map_err(|e| status_from_ais(&e))?;
        m.bytes_read
            .add(got.iter().map(|(_, data)| data.len() as u64).sum());
        let sections = got
            .into_iter()
            .map(|(section, data)| pb::SectionData { section, data })
            .collect();
        Ok(Response::new(pb::ReadResponse { sections }))
    }

    async fn set_expiration(
        &self,
        req: Request<pb::SetExpirationRequest>,
    ) -> Result<Response<pb::SetExpirationResponse>, Status> {
        let r = req.into_inner();
        let cmd = CkptCommand::SetExpiration {
            ckpt: r.checkpoint,
            section: r.section,
            expires_at_ms: r.expires_at_ms,
            epoch: r.epoch,
        };
        done(self.propose(cmd, deadline(r.options.as_ref())).await?)?;
        Ok(Response::new(pb::SetExpirationResponse {}))
    }

    async fn sections(
        &self,
        req: Request<pb::SectionsRequest>,
    ) -> Result<Response<pb::SectionsResponse>, Status> {
        let r = req.into_inner();
        let name = r.checkpoint;
        let before = (r.expiring_before_ms != 0).then_some(r.expiring_before_ms);
        let infos = self
            .handle
            .read(
                mode(r.stale),
                deadline(r.options.as_ref()),
                move |s: &CkptState| s.sections(&name, before),
            )
            .await
            .map_err(propose_err)?
            .map_err(|e| status_from_ais(&e))?;
        let sections = infos
            .into_iter()
            .map(|i| pb::SectionInfo {
                section: i.section,
                size: i.size,
                expires_at_ms: i.expires_at_ms,
                last_update_index: i.last_update_index,
            })
            .collect();
        Ok(Response::new(pb::SectionsResponse { sections }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::CheckpointStatus>, Status> {
        let r = req.into_inner();
        let name = r.name;
        let st = self
            .handle
            .read(
                mode(r.stale),
                deadline(r.options.as_ref()),
                move |s: &CkptState| s.status(&name),
            )
            .await
            .map_err(propose_err)?
            .map_err(|e| status_from_ais(&e))?;
        Ok(Response::new(status_to_pb(&st)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let all = self
            .handle
            .read(
                mode(r.stale),
                deadline(r.options.as_ref()),
                |s: &CkptState| s.list(),
            )
            .await
            .map_err(propose_err)?;
        Ok(Response::new(pb::ListResponse {
            checkpoints: all.iter().map(status_to_pb).collect(),
        }))
    }
}
