//! The HTTP engine: everything that touches a client or a backend connection. From the top:
//! [`handle`] (what the daemon holds of a running proxy: start, stats, reload, probe) >
//! [`server`] (worker threads, listeners, accept, TLS, HTTP/1 or HTTP/2 per connection) >
//! [`h2`] (the HTTP/2 server) > [`forward`] (HTTP/2 streams, and requests for backends that
//! speak h2c, https or h2, through hyper's client; its HTTP/1.1 backends through `h1`'s
//! client) > [`h1`] (the HTTP/1.1 engine) > [`connection`] (a client connection's state and what all share) > [`routes`]
//! (the services of each listening address, swapped whole by a reload) > [`stats`]. Beside them:
//! the client I/O's checks and timeouts ([`guard`]), backend connections ([`backend`], [`sender_pool`] for those hyper drives),
//! bodies, headers, the access log, TLS certificates, connections per client address
//! ([`per_client`]). Imports run down this list and into
//! [`crate::proxy::policy`], never back up.

pub mod access_log;
pub mod backend;
pub mod body;
pub mod connection;
pub mod dispatch;
pub mod forward;
pub mod guard;
pub mod h1;
pub mod h2;
pub mod handle;
pub mod headers;
pub mod per_client;
pub mod routes;
pub mod sender_pool;
pub mod server;
pub mod stats;
pub mod tls;
