//! One module per command.

pub mod decrypt;
pub mod demo;
pub mod encrypt;
pub mod evaluate;
#[cfg(feature = "exact")]
pub mod exact;
pub mod import_peft;
pub mod inspect;
pub mod keygen;
pub mod params;
pub mod publish;
#[cfg(feature = "serve")]
pub mod serve;
pub mod token;
pub mod tune;
