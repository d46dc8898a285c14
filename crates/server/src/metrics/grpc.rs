//! gRPC request metrics: a middleware on the tonic routes that counts every
//! call by service, method and final status code, and times unary calls.
//!
//! A gRPC status travels in one of two places: in the response headers of
//! a "trailers-only" answer (how tonic sends an error before any message),
//! or in the trailers after the last message (every success, and an error
//! that ends a stream). So the code is known only when the response body
//! ends; the middleware wraps the body and records the call then. A body
//! dropped before its end (the client went away, or cancelled a stream) is
//! recorded as `Canceled`, as the server saw it end.
//!
//! Labels are bounded: the method table is read once from `ringkv_api`'s
//! descriptors, and a path that names no declared method is counted under
//! [`UNKNOWN_LABEL`] rather than under whatever a client sent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;
use prost_reflect::DescriptorPool;
use tonic::Code;

use super::{METADATA, Metrics};

/// Name of the counter of finished calls.
pub const GRPC_REQUESTS: &str = "ringkv_grpc_requests_total";

/// Name of the histogram of unary call durations.
pub const GRPC_DURATION_HISTOGRAM: &str = "ringkv_grpc_request_duration_seconds";

/// Bucket bounds of [`GRPC_DURATION_HISTOGRAM`] (and of the dashboard's
/// latency chart), in seconds: 100 µs (a read served from memory on
/// loopback) to 10 s (past etcd's request timeout).
pub const GRPC_DURATION_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `service` and `method` label of a path that names no declared RPC.
pub const UNKNOWN_LABEL: &str = "unknown";

/// One declared RPC and its metric handles, registered on first use.
pub(crate) struct Method {
    service: String,
    pub(crate) name: String,
    /// Either side streams: such a call lasts as long as the stream, so
    /// its duration says nothing about latency and is not timed.
    pub(crate) streaming: bool,
    duration: OnceLock<Histogram>,
}

/// Totals over every unary call, kept beside the labelled metrics for the
/// dashboard, which needs numbers rather than Prometheus text.
#[derive(Debug)]
pub(crate) struct UnaryTotals {
    /// Finished unary calls.
    pub(crate) calls: AtomicU64,
    /// Those that did not end `OK`.
    pub(crate) errors: AtomicU64,
    /// Calls per [`GRPC_DURATION_BUCKETS_SECONDS`] bucket (not cumulative),
    /// and past the last bound in the final slot.
    pub(crate) buckets: [AtomicU64; GRPC_DURATION_BUCKETS_SECONDS.len() + 1],
    /// Sum of the durations, in microseconds.
    pub(crate) duration_sum_micros: AtomicU64,
}

impl UnaryTotals {
    fn new() -> UnaryTotals {
        UnaryTotals {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_sum_micros: AtomicU64::new(0),
        }
    }

    fn record(&self, code: Code, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if code != Code::Ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = took.as_secs_f64();
        let slot = GRPC_DURATION_BUCKETS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(GRPC_DURATION_BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// The gRPC side of [`Metrics`].
pub(crate) struct GrpcMetrics {
    /// Declared RPCs by path (`/etcdserverpb.KV/Put`).
    by_path: HashMap<String, usize>,
    /// Declared RPCs, then the unknown one last.
    pub(crate) methods: Vec<Method>,
    /// Finished calls by (method index, code).
    requests: RwLock<HashMap<(usize, Code), Counter>>,
    pub(crate) unary: UnaryTotals,
}

impl GrpcMetrics {
    /// The table of every RPC `ringkv_api` declares.
    pub(crate) fn new() -> GrpcMetrics {
        let pool = DescriptorPool::decode(ringkv_api::FILE_DESCRIPTOR_SET)
            .expect("ringkv_api's build script writes a valid descriptor set");
        let mut methods = Vec::new();
        let mut by_path = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                by_path
                    .insert(format!("/{}/{}", service.full_name(), method.name()), methods.len());
                methods.push(Method {
                    service: service.full_name().to_owned(),
                    name: method.name().to_owned(),
                    streaming: method.is_client_streaming() || method.is_server_streaming(),
                    duration: OnceLock::new(),
                });
            }
        }
        methods.push(Method {
            service: UNKNOWN_LABEL.to_owned(),
            name: UNKNOWN_LABEL.to_owned(),
            streaming: true,
            duration: OnceLock::new(),
        });
        GrpcMetrics {
            by_path,
            methods,
            requests: RwLock::new(HashMap::new()),
            unary: UnaryTotals::new(),
        }
    }

    /// The index of the RPC at `path`, or of the unknown one.
    pub(crate) fn method_index(&self, path: &str) -> usize {
        self.by_path.get(path).copied().unwrap_or(self.methods.len() - 1)
    }

    fn labels(&self, method: usize) -> Vec<Label> {
        let m = &self.methods[method];
        vec![Label::new("service", m.service.clone()), Label::new("method", m.name.clone())]
    }

    /// Records one finished call.
    fn record(&self, recorder: &PrometheusRecorder, method: usize, code: Code, took: Duration) {
        let counter = {
            let cached = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            cached.get(&(method, code)).cloned()
        };
        let counter = counter.unwrap_or_else(|| {
            let mut labels = self.labels(method);
            // Go's names, as etcd's `grpc_server_handled_total` shows them.
            labels.push(Label::new("code", ringkv_api::grpc_code_name(code)));
            let counter =
                recorder.register_counter(&Key::from_parts(GRPC_REQUESTS, labels), &METADATA);
            self.requests
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((method, code), counter.clone());
            counter
        });
        counter.increment(1);
        let m = &self.methods[method];
        if !m.streaming {
            let histogram = m.duration.get_or_init(|| {
                let key = Key::from_parts(GRPC_DURATION_HISTOGRAM, self.labels(method));
                recorder.register_histogram(&key, &METADATA)
            });
            histogram.record(took.as_secs_f64());
            self.unary.record(code, took);
        }
    }
}

/// The middleware: see the module docs. Installed by
/// [`Metrics::instrument_grpc`].
pub(crate) async fn observe(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = metrics.inner.grpc.method_index(request.uri().path());
    let response = next.run(request).await;
    let header_code = status_of(response.headers());
    let call = Call { metrics, method, started, header_code, done: false };
    response.map(|inner| Body::new(ObservedBody { inner, call }))
}

/// The `grpc-status` of a header block, if it has one.
fn status_of(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

/// A call whose outcome is not recorded yet.
struct Call {
    metrics: Metrics,
    method: usize,
    started: Instant,
    /// The code of a trailers-only answer.
    header_code: Option<Code>,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let inner = &self.metrics.inner;
        inner.grpc.record(&inner.recorder, self.method, code, self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped before its end: the client left (or the server stopped).
        // A trailers-only answer was complete when it was sent.
        let code = self.header_code.unwrap_or(Code::Cancelled);
        self.finish(code);
    }
}

/// A response body that records its call when it ends.
struct ObservedBody {
    inner: Body,
    call: Call,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.call.finish(code);
                }
            }
            // A body that fails mid-way never sent its status.
            Poll::Ready(Some(Err(_))) => this.call.finish(Code::Unknown),
            Poll::Ready(None) => {
                let code = this.call.header_code.unwrap_or(Code::Unknown);
                this.call.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
