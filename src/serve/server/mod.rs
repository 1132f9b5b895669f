//! The axum server: routes, admission control, timeouts, graceful shutdown.
//!
//! - [`state`]: errors as HTTP answers, the shared state, admission and body reading;
//! - [`handlers`]: the routes and middleware;
//! - [`runtime`]: binding, serving, shutdown, the background handle.

mod handlers;
mod runtime;
mod state;

pub use runtime::{run, run_until_signal, shutdown_signal, spawn, Server, ServerHandle};
