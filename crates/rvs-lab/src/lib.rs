//! `rvs-lab` — builds and tears down network-namespace topologies (client, routers with chosen
//! MTUs, director, real servers) for the demo and the end-to-end tests. Filled by the daemon
//! issue; empty in this version.
