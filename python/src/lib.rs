//! Python bindings of hepeft (the native module `hepeft._hepeft`; the package `hepeft`
//! re-exports it). A thin front end: every computation and check is a library call.
//!
//! | Python | library |
//! |---|---|
//! | `Params`, `hepeft.params.select` | `ckks::CkksParams`, `select::select` |
//! | `Model`, `Builder`, `publish` | `model::{Adapter, AdapterBuilder}`, `plan::public_structure` |
//! | `hepeft.peft.load` | `model::peft`, `model::import::build_card` |
//! | `Client`, `Server`, `EvalKeys`, `Query`, `Result` | `session::{Client, Server, Query, QueryResult}` |
//! | `HttpClient` | `serve::client::QueryClient` |
//! | exceptions | [`errors`]: one class per `hepeft::Error` kind |

use pyo3::prelude::*;

pub mod errors;
pub mod http;
pub mod model;
pub mod pack;
pub mod params;
pub mod peft;
pub mod session;

/// The native module.
#[pymodule]
fn _hepeft(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<params::Params>()?;
    m.add_class::<params::Selection>()?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::Builder>()?;
    m.add_class::<model::Node>()?;
    m.add_class::<session::EvalKeys>()?;
    m.add_class::<session::Query>()?;
    m.add_class::<session::EncryptedResult>()?;
    m.add_class::<session::Client>()?;
    m.add_class::<session::Server>()?;
    m.add_class::<http::HttpClient>()?;
    m.add_function(wrap_pyfunction!(params::select, m)?)?;
    m.add_function(wrap_pyfunction!(model::publish, m)?)?;
    m.add_function(wrap_pyfunction!(peft::load, m)?)?;
    m.add_function(wrap_pyfunction!(session::_rust_evaluate_seconds, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
