//! The cluster: openraft type configuration (and, next, network, membership admin and
//! forwarding). Invariant: with `store`, the only module that names openraft.

pub mod types;
