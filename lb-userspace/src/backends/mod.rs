//! Backend policy that both the L7 proxy and the L4 data plane read: which backends are
//! healthy ([`health`]) and Maglev consistent hashing over them ([`maglev`]), so both paths
//! and every node agree on where a flow or a session key goes.

pub mod health;
pub mod maglev;
