//! The operator's entity model: nodes, service groups, service units, components, service
//! instances, component service instances and SI dependencies, as one flat TOML file applied
//! with `nines admin model apply FILE`.
//!
//! How to use it: [`Model::parse`] (syntax and field errors, with line and column), then
//! [`Model::validate`] (every semantic error at once, each naming its entity). A valid model
//! gives each SG's policy view ([`Model::sg_config`]) and answers the lookups the AMF state
//! machine and node director need. [`Model::diff`] tells what applying a changed model adds,
//! removes and changes, so what did not change is not restarted.
//!
//! The model is plain data (serde, `PartialEq`): it lives in replicated state and is compared.

mod diff;
mod error;
pub mod limits;
mod query;
mod types;
mod validate;

pub use diff::{KindDiff, ModelDiff};
pub use error::{ModelError, ModelErrors};
pub use types::{Component, Csi, Model, Node, Recovery, Sg, Si, SiDependency, Su};
