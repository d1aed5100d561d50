//! The proxy's policy: which backends a request may go to and in what order. [`upstream`]
//! (one per HTTP service) answers the engine; behind it [`balance`] orders backends,
//! [`affinity`] keeps sessions on theirs, and [`replicate`] shares learned sessions with the
//! peer nodes; [`queue`] holds each backend to `backend_max_connections`. Nothing here touches a client connection or imports the engine.

pub mod affinity;
pub mod balance;
pub mod queue;
pub mod replicate;
pub mod upstream;
