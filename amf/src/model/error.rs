//! Model errors: every problem found, each naming its entity.

use std::fmt;

/// One problem of a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity}: {problem}")]
pub struct ModelError {
    /// The entity, e.g. `su counter-1` (or the file name for syntax errors).
    pub entity: String,
    /// What is wrong, and what to do when that is not obvious.
    pub problem: String,
}

/// Every problem of a model, in the order found. Displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelErrors(pub Vec<ModelError>);

impl ModelErrors {
    /// Adds a problem of `entity`.
    pub(crate) fn push(&mut self, entity: impl Into<String>, problem: impl Into<String>) {
        self.0.push(ModelError {
            entity: entity.into(),
            problem: problem.into(),
        });
    }

    /// `Ok` when empty.
    pub(crate) fn into_result(self) -> Result<(), ModelErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ModelErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelErrors {}
