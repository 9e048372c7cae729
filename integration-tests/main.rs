//! Vigil's integration tests, in one binary (DataFusion and librdkafka are
//! linked once). The Kafka tests run the `vigil` binary against a real
//! broker process (`VIGIL_TEST_BROKERS`, or a tansu this binary starts and
//! ends); the rule-pack tests (services/vigil/tests/) check the shipped
//! rules against labelled public cases and the docs against the code.

mod common;

mod console;

mod crash_consistency;
mod embedded_demo;
mod faults;
mod first_seen_state;
mod gen_kafka;
mod hot_reload;
mod kafka_pipeline;
mod operations;
mod outputs;
mod repartition;
mod scale_out;

#[path = "../services/vigil/tests/cli_tools.rs"]
mod cli_tools;
#[path = "../services/vigil/tests/deployment.rs"]
mod deployment;
#[path = "../services/vigil/tests/falco_traces.rs"]
mod falco_traces;
#[path = "../services/vigil/tests/noise_report.rs"]
mod noise_report;
#[path = "../services/vigil/tests/panther_cases.rs"]
mod panther_cases;
#[path = "../services/vigil/tests/rule_pack.rs"]
mod rule_pack;
