//! The trace layer: the outermost routing layer, one [`Trail`] per request.
//!
//! It sits above retry so one request is one trail however many attempts it
//! takes; the layers below note what they decide on it, and the trail's owner
//! reports when the last holder lets go — after the response body ended, not
//! when headers left. What a trail is (traces, metrics, spans) is the
//! [`Tracer`]'s business: the proxy plugs its telemetry in here, and herd-epp
//! runs the stack without this layer.
//!
//! [`Trail`]: crate::routed::Trail
//! [`Tracer`]: crate::routed::Tracer

mod future;
mod layer;
mod service;
mod tee;

pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Traced;
pub use tee::Tee;
