//! The generator against the shipped rule pack: background benign, every
//! injected attack detected by exactly the rules its manifest names.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::decode::{decode, DecodeLimits};
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::rules::{RuleEngine, RulePack};
use crate::source::SourceKind;

fn rule_pack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules")
}

#[test]
fn same_config_same_stream_other_seed_other_stream() {
    let a: Vec<_> = Generator::new(GenConfig::default()).take(500).collect();
    let b: Vec<_> = Generator::new(GenConfig::default()).take(500).collect();
    let c: Vec<_> = Generator::new(GenConfig {
        seed: 2,
        ..Default::default()
    })
    .take(500)
    .collect();
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.payload == y.payload && x.event_id == y.event_id));
    assert_eq!(
        a.iter()
            .filter_map(|e| e.manifest_entry())
            .collect::<Vec<_>>(),
        b.iter()
            .filter_map(|e| e.manifest_entry())
            .collect::<Vec<_>>()
    );
    assert!(
        a.iter()
            .zip(&c)
            .filter(|(x, y)| x.payload != y.payload)
            .count()
            > 400
    );
}

#[test]
fn attacks_sit_at_their_positions_and_cycle_through_the_catalogue() {
    let config = GenConfig {
        attack_every: 50,
        ..Default::default()
    };
    let events: Vec<_> = Generator::new(config).take(50 * ATTACKS.len()).collect();
    let manifest: Vec<_> = events.iter().filter_map(|e| e.manifest_entry()).collect();
    let positions: Vec<u64> = manifest.iter().map(|m| m.index).collect();
    assert_eq!(
        positions,
        (0..ATTACKS.len() as u64)
            .map(|k| k * 50 + 25)
            .collect::<Vec<_>>()
    );
    let names: Vec<&str> = manifest.iter().map(|m| m.attack).collect();
    assert_eq!(names, ATTACKS.iter().map(|a| a.name).collect::<Vec<_>>());
    // per-source positions count only that source's events
    for m in &manifest {
        let before = events[..m.index as usize]
            .iter()
            .filter(|e| e.source == m.source)
            .count() as u64;
        assert_eq!(m.source_index, before);
    }
}

#[test]
fn single_source_streams_only_that_source_and_its_attacks() {
    let events: Vec<_> = Generator::new(GenConfig {
        attack_every: 10,
        ..GenConfig::single(SourceKind::Tetragon)
    })
    .take(100)
    .collect();
    assert!(events.iter().all(|e| e.source == SourceKind::Tetragon));
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.source_index == i as u64));
    let attacks: BTreeSet<_> = events
        .iter()
        .filter_map(|e| e.attack.map(|a| a.name))
        .collect();
    assert_eq!(
        attacks,
        BTreeSet::from(["tetragon_crypto_miner", "tetragon_nsenter_escape"])
    );
}

#[test]
fn audit_events_are_one_to_two_kilobytes_on_average_and_decode() {
    let events: Vec<_> = Generator::new(GenConfig::single(SourceKind::K8sAudit))
        .take(3000)
        .collect();
    let mean = events.iter().map(|e| e.payload.len()).sum::<usize>() / events.len();
    assert!(
        (1000..=2000).contains(&mean),
        "mean audit event size {mean} bytes"
    );
    let decoded = decode(
        SourceKind::K8sAudit,
        &events
            .iter()
            .map(GeneratedEvent::raw_message)
            .collect::<Vec<_>>(),
        DecodeLimits::default(),
        crate::detect::now_ns(),
    );
    assert!(
        decoded.failures.is_empty(),
        "{:?}",
        decoded.failures.first()
    );
    assert_eq!(decoded.events.len(), 3000);
    // the id the generator reports is the one Vigil derives
    assert!((0..decoded.events.len())
        .zip(&events)
        .all(|(row, e)| decoded.events.native_id(row) == Some(e.event_id.as_str())));
}

#[test]
fn entity_counts_bound_the_distinct_users_and_pods() {
    let config = GenConfig {
        users: 7,
        pods: 40,
        ..GenConfig::single(SourceKind::K8sAudit)
    };
    let users: BTreeSet<String> = Generator::new(config)
        .take(5000)
        .map(|e| e.key)
        .filter(|k| k.ends_with("@example.com"))
        .collect();
    assert_eq!(users.len(), 7);
}

/// Every alert of the shipped pack over a generated stream is one the
/// manifest announced, and every announced detection happens.
#[tokio::test]
async fn shipped_rules_detect_exactly_the_injected_attacks() {
    let engine = RuleEngine::compile(RulePack::load_dir(&rule_pack()).unwrap().rule_set())
        .await
        .unwrap();
    let mut detector = Detector::new(
        engine,
        DecodeLimits::default(),
        Arc::new(Metrics::default()),
    );
    let config = GenConfig {
        attack_every: 40,
        users: 50,
        pods: 300,
        ..Default::default()
    };
    let events: Vec<_> = Generator::new(config)
        .take(40 * ATTACKS.len() * 3)
        .collect();
    let expected: BTreeSet<(String, String)> = events
        .iter()
        .filter_map(|e| e.manifest_entry())
        .flat_map(|m| {
            m.rules
                .iter()
                .map(move |r| (r.to_string(), m.event_id.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        expected.len(),
        3 * ATTACKS.iter().map(|a| a.rules.len()).sum::<usize>()
    );
    let mut found = BTreeSet::new();
    for chunk in events.chunks(500) {
        let out = detector
            .process(chunk.iter().map(GeneratedEvent::raw_message).collect())
            .await;
        assert!(
            out.dead_letters.is_empty(),
            "{:?}",
            out.dead_letters.first()
        );
        for a in out.alerts {
            assert_eq!(a.events.len(), 1);
            assert!(
                found.insert((a.rule_id.clone(), a.events[0].event_id.clone())),
                "duplicate alert {a:?}"
            );
        }
    }
    let unexpected: Vec<_> = found.difference(&expected).collect();
    let missed: Vec<_> = expected.difference(&found).collect();
    assert!(
        unexpected.is_empty() && missed.is_empty(),
        "unexpected alerts: {unexpected:?}\nmissed: {missed:?}"
    );
}
