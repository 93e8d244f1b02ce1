//! Updating a deployable model directory's `heads.json` and `results.json` in place.

use std::path::Path;

use anyhow::{Context, Result};
use plm_model::HeadsConfig;
use serde_json::{json, Map, Value};

/// Reads `model`'s `heads.json` and `results.json` (an empty object when absent), lets `heads`
/// and `results` change them, writes both back and says so.
pub fn update_heads_and_results(
    model: &Path,
    heads: impl FnOnce(&mut HeadsConfig),
    results: impl FnOnce(&mut Map<String, Value>),
) -> Result<()> {
    let heads_path = model.join(plm_model::heads::files::CONFIG);
    let mut config: HeadsConfig = plm_model::checkpoint::read_json(&heads_path)?;
    heads(&mut config);
    config.save(model)?;
    let results_path = model.join("results.json");
    let mut all: Value = plm_model::checkpoint::read_json(&results_path).unwrap_or(json!({}));
    results(
        all.as_object_mut()
            .context("results.json is not an object")?,
    );
    plm_model::checkpoint::write_json(&results_path, &all)?;
    println!(
        "wrote {} and {}",
        heads_path.display(),
        results_path.display()
    );
    Ok(())
}
