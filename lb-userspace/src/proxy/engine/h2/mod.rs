//! The HTTP/2 server of the engine: a client connection's frames are read and written in its
//! task (`server`), each stream's request and response driven there too, with the HPACK
//! codec ([`hpack`]) and the frame codec (`frame`) as sans-I/O parts. Requests go to
//! [`super::forward::handle`], as hyper's did before; what this saves over hyper and the h2
//! crate (a task, a lock and a HeaderMap conversion per stream, a flush per DATA frame) is in
//! docs/benchmarks.md, Proxy profile.

mod frame;
pub mod hpack;
mod server;
mod shared;

pub use server::serve;
pub use shared::RequestBody;
