//! The second stage of `correlation.placement = "repartition"`
//! (docs/architecture.md#repartitioned-correlation): every instance also
//! runs a run loop over `topics.repartition`, in the consumer group
//! `<group_id>-correlate`, with the correlation rules only, one lane per
//! rule (see `vigil_engine::correlate::RuleLanes`). The broker's group
//! protocol gives each instance some repartition partitions, so each holds
//! the correlation state of the keys of those partitions only.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::rules;
use crate::rules::first_seen::FirstSeenStorage;

/// The second stage's settings: its own consumer group and checkpoint key,
/// `<group_id>-correlate`, and, in exactly-once mode, its own
/// transactional id, `<transactional id>-correlate` (two transactional
/// producers with one id would fence each other; derived from the first
/// stage's, it is as stable per instance).
pub fn second_stage_settings(settings: &Settings) -> Settings {
    let mut s = settings.clone();
    s.kafka.group_id = format!("{}-correlate", settings.kafka.group_id);
    s.kafka.transactional_id = Some(format!("{}-correlate", settings.kafka.transactional_id()));
    s
}

/// The second stage's settings and detector: the correlation rules in
/// lanes, and the fold lanes of per-event rules with `-- suppress`,
/// reading repartition records.
pub async fn second_stage(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    first_seen_storage: FirstSeenStorage,
) -> Result<(Settings, Detector)> {
    let (per_event, mut correlating) =
        rules::load_split_rule_set(&settings.rules.layers(), settings.correlation.clone())
            .await
            .map_err(anyhow::Error::new)
            .with_context(|| format!("loading rules from {}", settings.rules.dir.display()))?;
    correlating.set_time_budget(settings.rules.max_eval());
    let mut correlating = correlating.into_lanes().await.map_err(anyhow::Error::new)?;
    // The first stage forwards the alerts of per-event rules that fold
    // them; their fold lanes are here.
    let folding = per_event.rules().map(|r| r.meta.clone()).collect();
    if let Some(lanes) = correlating.lanes_mut() {
        lanes.fold_alerts_of(folding);
    }
    correlating.set_first_seen_storage(first_seen_storage);
    let detector = Detector::new(
        correlating,
        settings.limits.decode_limits(),
        metrics.clone(),
    )
    .reading_forwarded();
    Ok((second_stage_settings(settings), detector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_stage_has_its_own_group_and_transactional_id() {
        let mut settings = Settings::default();
        settings.kafka.group_id = "g".into();
        settings.kafka.transactional_id = Some("vigil-0".into());
        let second = second_stage_settings(&settings);
        assert_eq!(second.kafka.group_id, "g-correlate");
        assert_eq!(second.kafka.transactional_id(), "vigil-0-correlate");
        assert_eq!(
            settings.kafka.transactional_id(),
            "vigil-0",
            "the first stage's is unchanged"
        );
    }
}
