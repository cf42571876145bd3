//! `rvs-api` — the control protocol shared by `rvsd` and `rvsadm`: typed requests, responses and
//! errors. Filled by the daemon and operations issues; empty in this version.
