//! The set workload (not written yet: the run reports it skipped).

use std::sync::Arc;

use super::WorkloadOutcome;
use crate::error::ChaosError;
use crate::run::Ctx;

/// Runs the workload.
///
/// # Errors
/// None.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    ctx.quiesce().await;
    Ok(WorkloadOutcome {
        skipped: Some("the set workload is not written yet".to_owned()),
        ..WorkloadOutcome::default()
    })
}
