//! llmtel's compiled hot path, a Python extension module (PyO3).

use pyo3::prelude::*;

pub mod block;
mod normalize;
mod values;
mod wire;

#[pymodule]
fn _llmtel_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    block::register(m)?;
    m.add_class::<normalize::Normalizer>()?;
    Ok(())
}
