//! Integration tests: one binary of modules (link time matters on small machines). Every test talks real
//! HTTP over loopback to real servers: the gateway (in process or the real binary) and real upstreams.

mod browser;
mod browser_e2e;
mod cli;
mod demo;
mod hardening;
mod interop;
mod lifecycle;
mod login;
mod node;
mod proxy;
mod routes;
mod support;
