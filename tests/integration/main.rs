//! Integration tests: one binary of modules (link time matters on small machines). Every test talks real
//! HTTP over loopback to real servers: the gateway (in process or the real binary) and real upstreams.

mod access;
mod assertion;
mod authorize;
mod bearer;
mod browser;
mod browser_e2e;
mod cli;
mod demo;
mod deploy;
mod edge;
mod hardening;
mod interop;
mod lifecycle;
mod login;
mod node;
mod proxy;
mod redis;
mod reload;
mod routes;
mod runtime;
mod servers;
mod sessions;
mod support;
mod telemetry;
mod upstream_tls;
